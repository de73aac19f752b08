// The call's layout and what it asks of the bridge. Pure: no DOM, no network.
//
// Grid: every participant in an equal tile; each remote video is asked for at most 180p.
// Stage: one participant large (the one pinned by a click, else the dominant speaker, else the first
// other participant), the rest in a strip; the large one's video source is on stage at up to 720p, the
// strip's at 180p. The bridge reads this as a ReceiverVideoConstraints (docs/jitsi-protocol.md §4).

export const TILE_HEIGHT = 180;
export const STAGE_HEIGHT = 720;
// A screen share on stage: its full size (screenshare.js captures at most 1080p).
export const SCREEN_STAGE_HEIGHT = 1080;

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
 * of the participant on stage (null in the grid, or when that participant is us or sends no video). Every
 * field is always given: the bridge merges them into what it was told before.
 */
export function receiverConstraints(stageSource, stageHeight = STAGE_HEIGHT) {
  return {
    onStageSources: stageSource ? [stageSource] : [],
    selectedSources: [],
    defaultConstraints: { maxHeight: TILE_HEIGHT },
    constraints: stageSource ? { [stageSource]: { maxHeight: stageHeight } } : {},
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
