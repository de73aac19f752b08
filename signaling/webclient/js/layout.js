// The call's layout and what it asks of the bridge. Pure: no DOM, no network.
//
// Grid: every participant in an equal tile; each remote video is asked for at most 180p.
// Stage: one participant large (the one pinned by a click, else the dominant speaker, else the first
// other participant), the rest in a strip; the large one's video source is on stage at up to 720p, the
// strip's at 180p. The bridge reads this as a ReceiverVideoConstraints (docs/jitsi-protocol.md §4).

export const TILE_HEIGHT = 180;
export const STAGE_HEIGHT = 720;

/** The participant on stage: pinned, else the dominant speaker, else the first remote one, else us. */
export function stageParticipant({ mode, pinned, dominant }, people) {
  if (mode !== 'stage') return null;
  const ids = new Set(people.map((p) => p.id));
  if (pinned && ids.has(pinned)) return pinned;
  const me = people.find((p) => p.local)?.id;
  if (dominant && ids.has(dominant) && dominant !== me) return dominant;
  return people.find((p) => !p.local)?.id ?? me ?? null;
}

/**
 * The ReceiverVideoConstraints (without colibriClass) for a layout. `stageSource` is the video source name
 * of the participant on stage (null in the grid, or when that participant is us or sends no video). Every
 * field is always given: the bridge merges them into what it was told before.
 */
export function receiverConstraints(stageSource) {
  return {
    onStageSources: stageSource ? [stageSource] : [],
    selectedSources: [],
    defaultConstraints: { maxHeight: TILE_HEIGHT },
    constraints: stageSource ? { [stageSource]: { maxHeight: STAGE_HEIGHT } } : {},
  };
}
