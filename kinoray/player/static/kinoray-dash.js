/*
 * kinoray's DASH test page (/player/{playback_id}/dash): dash.js's stock MediaPlayer on the asset's MPD, with
 * the browser's own controls. window.kinorayDash = {player, errors} for tests and debugging. kinoray, Apache-2.0.
 */
(function () {
  "use strict";
  const video = document.getElementById("video");
  const shown = document.getElementById("error");
  const state = { player: null, errors: [] };
  window.kinorayDash = state;
  const fail = (message) => {
    state.errors.push(message);
    shown.textContent = `This video cannot be played: ${message}`;
    shown.hidden = false;
  };
  if (!window.dashjs) {
    fail("dash.js did not load");
    return;
  }
  const player = dashjs.MediaPlayer().create();
  state.player = player;
  player.on(dashjs.MediaPlayer.events.ERROR, (event) => {
    const error = event.error || {};
    fail(`${error.message || "dash.js error"} (code ${error.code === undefined ? "?" : error.code})`);
  });
  player.initialize(video, new URL(video.dataset.src, location.href).href, video.hasAttribute("autoplay"));
})();
