// Playback tokens minted by Mux's Node SDK (mux.jwt.signPlaybackId), exactly as a user's backend mints them for
// @mux/mux-player: KINORAY_TEST_CONFIG = {playbackId, keyId, keySecret}; prints {video, thumbnail, storyboard}.
import Mux from '@mux/mux-node';

const { playbackId, keyId, keySecret } = JSON.parse(process.env.KINORAY_TEST_CONFIG);
const mux = new Mux({ tokenId: 'unused', tokenSecret: 'unused' });
const tokens = await mux.jwt.signPlaybackId(playbackId, {
  keyId,
  keySecret,
  type: ['video', 'thumbnail', 'storyboard'],
  expiration: '1h',
});
process.stdout.write(JSON.stringify({
  video: tokens['playback-token'],
  thumbnail: tokens['thumbnail-token'],
  storyboard: tokens['storyboard-token'],
}));
