// The page's one polite live region.

export function createAnnouncer(live) {
  return (text) => {
    // Clearing first makes screen readers repeat an identical message.
    live.textContent = "";
    requestAnimationFrame(() => { live.textContent = text; });
  };
}
