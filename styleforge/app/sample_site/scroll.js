// Infinite scroll: the feed fetches its next batch from /api/scroll when the reader nears the
// bottom of the page, until the server answers that there is no next batch.
const feed = document.getElementById("feed");
const feedName = document.body.dataset.feed || "photos";
const statusLine = document.getElementById("status");
let nextBatch = 0;
let loading = false;

function card(image) {
  const figure = document.createElement("figure");
  figure.className = "card";
  const img = document.createElement("img");
  img.src = image.src;
  img.alt = image.alt;
  if (image.srcset) img.srcset = image.srcset;
  const caption = document.createElement("figcaption");
  caption.textContent = image.alt;
  figure.append(img, caption);
  return figure;
}

async function loadNext() {
  if (loading || nextBatch === null) return;
  loading = true;
  try {
    const response = await fetch(`/api/scroll?feed=${feedName}&batch=${nextBatch}`);
    const batch = await response.json();
    feed.append(...batch.images.map(card));
    nextBatch = batch.next;
    statusLine.textContent = nextBatch === null ? "That is everything." : "Scroll for more.";
  } catch (error) {
    statusLine.textContent = `Could not load more: ${error}`;
  } finally {
    loading = false;
  }
}

function nearBottom() {
  return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 400;
}

window.addEventListener("scroll", () => { if (nearBottom()) loadNext(); });
loadNext();
