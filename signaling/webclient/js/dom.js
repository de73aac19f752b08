// The page's DOM builder: h("tag.class1.class2#id", props, ...children) (the id may come anywhere after the
// tag name). Text children become text nodes: nothing a remote party sends is ever parsed as HTML here.

export function h(tag, props = {}, ...children) {
  const name = tag.match(/^[a-z0-9]*/)[0];
  const e = document.createElement(name || 'div');
  for (const [, sigil, value] of tag.slice(name.length).matchAll(/([.#])([^.#]+)/g)) {
    if (sigil === '#') e.id = value;
    else e.classList.add(value);
  }
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'html') e.innerHTML = v; // our own icons only, never remote text
    else if (k in e && typeof v !== 'string') e[k] = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) e.append(c);
  return e;
}
