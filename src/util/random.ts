// Random order, shared by block selection (seeded, so tests are deterministic) and the evidence
// exchange (which servers to hand evidence to).

/** `items` in a uniformly random order (Fisher-Yates, in place), drawing from `random` in [0, 1). */
export function shuffled<T> (items: T[], random: () => number = Math.random): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[items[i], items[j]] = [items[j], items[i]]
  }
  return items
}
