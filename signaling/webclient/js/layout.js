// The call's layout and what it asks of the bridge. Pure: no DOM, no network.
//
// Grid: every participant in an equal tile, in pages of as many tiles as fit at no less than MIN_TILE;
// each remote video on the page is asked for at most 180p. Stage: one participant large (the one pinned by
// a click, else the dominant speaker, else the first other participant), the rest in the filmstrip beside
// it (which can be hidden); the large one's video source is on stage at up to 720p, the filmstrip's at
// 180p. Whatever is not visible (another page, a hidden filmstrip or self view, scrolled away) is asked for
// at 0: the bridge forwards none of it. The bridge reads this as a ReceiverVideoConstraints
// (docs/jitsi-protocol.md §4).

export const TILE_HEIGHT = 180;
export const STAGE_HEIGHT = 720;
// A screen share on stage: its full size (screenshare.js captures at most 1080p).
export const SCREEN_STAGE_HEIGHT = 1080;
// The smallest grid tile (px) before the grid goes to another page, and the gap between tiles (app.css).
export const MIN_TILE = Object.freeze({ width: 320, height: 180 });
export const GRID_GAP = 12;

/** How many tiles fit a grid of `width` × `height` px, none smaller than MIN_TILE (at least one). */
export function tilesPerPage(width, height) {
  const cols = Math.max(1, Math.floor((width + GRID_GAP) / (MIN_TILE.width + GRID_GAP)));
  const rows = Math.max(1, Math.floor((height + GRID_GAP) / (MIN_TILE.height + GRID_GAP)));
  return cols * rows;
}

/** Columns for `n` tiles in a grid `width` px wide: near square, never narrower tiles than MIN_TILE. */
export function gridColumns(n, width) {
  const fit = Math.max(1, Math.floor((width + GRID_GAP) / (MIN_TILE.width + GRID_GAP)));
  const square = n <= 1 ? 1 : n <= 4 ? 2 : n <= 9 ? 3 : 4;
  return Math.max(1, Math.min(square, fit));
}

/** The grid's page `page` (clamped) of `ids` in pages of `perPage`: {page, pages, visible (ids)}. */
export function gridPage(ids, perPage, page) {
  const per = Math.max(1, perPage);
  const pages = Math.max(1, Math.ceil(ids.length / per));
  const p = Math.min(Math.max(0, page), pages - 1);
  return { page: p, pages, visible: ids.slice(p * per, (p + 1) * per) };
}

/**
 * The participant on stage: pinned, else someone else's screen share (the first), else the dominant
 * speaker, else the first remote one, else us. Screen shares are entries of their own (screen: true).
 */
export function stageParticipant({ mode, pinned, dominant }, people) {
  if (mode !== 'stage') return null;
  const ids = new Set(people.map((p) => p.id));
  if (pinned && ids.has(pinned)) return pinned;
  const screen = people.find((p) => p.screen && !p.local);
  if (screen) return screen.id;
  const me = people.find((p) => p.local)?.id;
  if (dominant && ids.has(dominant) && dominant !== me) return dominant;
  return people.find((p) => !p.local)?.id ?? me ?? null;
}

/**
 * The ReceiverVideoConstraints (without colibriClass) for a layout. `stageSource` is the video source name
 * of the participant on stage (null in the grid, or when that participant is us or sends no video);
 * `hidden` the sources of tiles not visible. Every field is always given: the bridge merges them into what
 * it was told before.
 */
export function receiverConstraints(stageSource, stageHeight = STAGE_HEIGHT, hidden = []) {
  const constraints = {};
  for (const s of [...hidden].sort()) if (s !== stageSource) constraints[s] = { maxHeight: 0 };
  if (stageSource) constraints[stageSource] = { maxHeight: stageHeight };
  return {
    onStageSources: stageSource ? [stageSource] : [],
    selectedSources: [],
    defaultConstraints: { maxHeight: TILE_HEIGHT },
    constraints,
  };
}

/**
 * Screen shares go on stage for everyone by default: the layout switches to stage when someone else's
 * screen appears (unless the person chose a layout since), and back to the grid when the last one ends if
 * it was this that switched. Changes `layout` ({mode, pinned, auto}); returns true when it changed.
 */
export function followScreens(layout, people) {
  const sharing = people.some((p) => p.screen && !p.local);
  if (sharing && layout.mode === 'grid' && !layout.auto && !layout.chosen) {
    layout.mode = 'stage';
    layout.auto = true;
    return true;
  }
  if (!sharing) layout.chosen = false;
  if (!sharing && layout.auto) {
    layout.auto = false;
    if (layout.pinned && !people.some((p) => p.id === layout.pinned)) layout.pinned = null;
    if (!layout.pinned) {
      layout.mode = 'grid';
      return true;
    }
  }
  return false;
}
