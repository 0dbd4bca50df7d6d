// Mux's Node SDK (@mux/mux-node, unmodified, only baseURL changed) on playback restrictions and delivery usage:
// create / retrieve / list / update referrer / update user agent, a playback token naming the restriction minted
// with mux.jwt (`params: {playback_restriction_id}`, as Mux's guide has it), and the delivery-usage list.
// Driven by tests/test_playback_restrictions.py: KINORAY_TEST_CONFIG = {api, tokenId, tokenSecret, playbackId,
// keyId, keySecret, assetId}; prints {restriction, updated, listed, token, usage}.
import Mux from '@mux/mux-node';

const config = JSON.parse(process.env.KINORAY_TEST_CONFIG);
const mux = new Mux({
  tokenId: config.tokenId, tokenSecret: config.tokenSecret, baseURL: config.api, maxRetries: 0, timeout: 60_000,
});
const restriction = await mux.video.playbackRestrictions.create({
  referrer: { allowed_domains: ['*.example.com'], allow_no_referrer: false },
  user_agent: { allow_no_user_agent: true, allow_high_risk_user_agent: true },
});
const fetched = await mux.video.playbackRestrictions.retrieve(restriction.id);
const listed = [];
for await (const item of mux.video.playbackRestrictions.list({ limit: 2 })) listed.push(item.id);
await mux.video.playbackRestrictions.updateReferrer(restriction.id, {
  allowed_domains: ['*.example.com', 'example.com'], allow_no_referrer: false,
});
const updated = await mux.video.playbackRestrictions.updateUserAgent(restriction.id, {
  allow_no_user_agent: false, allow_high_risk_user_agent: true,
});
const token = await mux.jwt.signPlaybackId(config.playbackId, {
  keyId: config.keyId, keySecret: config.keySecret, expiration: '1h',
  params: { playback_restriction_id: restriction.id },
});
const usage = [];
for await (const row of mux.video.deliveryUsage.list({ asset_id: config.assetId })) usage.push(row);
process.stdout.write(JSON.stringify({ restriction, fetched, listed, updated, token, usage }));
