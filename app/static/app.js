// The dashboard's poll sends back every row that changed recently, a few
// perhaps twice; a row whose version is the one shown is left alone, so
// nothing on screen is re-rendered for nothing.
document.addEventListener("htmx:oobBeforeSwap", function (event) {
  var incoming = event.detail.fragment && event.detail.fragment.firstElementChild;
  var current = event.detail.target;
  if (incoming && current && incoming.dataset && incoming.dataset.version &&
      incoming.dataset.version === current.dataset.version) {
    event.detail.shouldSwap = false;
  }
});
