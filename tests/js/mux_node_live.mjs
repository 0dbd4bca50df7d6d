// Mux's Node SDK (@mux/mux-node, unmodified) run against kinoray's live-streams API: every operation kinoray
// offers, as a user's code would call it, with only baseURL changed. Driven by tests/test_mux_live.py, which
// passes the API in KINORAY_TEST_CONFIG (JSON) and checks what this prints.
//
// Prints one JSON object: {"operations": [{"name", "ok", "error"?}...], "facts": {...}}. An operation that throws
// is recorded with the SDK's error and the run goes on.
import { config, mux, op, operations } from './sdk_ops.mjs';
const facts = {};

async function refusedWith(call) {
  try {
    await call();
    return 'accepted';
  } catch (error) {
    return `${error?.constructor?.name} ${error?.status ?? ''}`.trim();
  }
}

const live = mux.video.liveStreams;
const stream = await op('video.liveStreams.create', () => live.create({
  playback_policy: ['public'],
  new_asset_settings: { playback_policy: ['public'] },
  latency_mode: 'low',
  reconnect_window: 45,
  passthrough: 'node',
  simulcast_targets: [{ url: 'rtmp://live.example.com/app', stream_key: 'node-key' }],
}));
facts.createdKey = stream?.stream_key ?? null;
facts.createdStatus = stream?.status;
facts.createdLatency = stream?.latency_mode;
facts.createdWindow = stream?.reconnect_window;
facts.id = stream?.id;
if (stream) {
  const got = await op('video.liveStreams.retrieve', () => live.retrieve(stream.id));
  facts.keyOnRetrieve = got?.stream_key ?? null;
  const listed = [];
  await op('video.liveStreams.list (auto-paging)', async () => {
    for await (const item of live.list({ limit: 2 })) {
      listed.push(item.id);
      if (listed.length > 1000) throw new Error('auto-paging did not end');
    }
  });
  facts.listed = listed.includes(stream.id);
  const byKey = await op('video.liveStreams.list (stream_key)', () => live.list({ stream_key: stream.stream_key }));
  facts.byKey = byKey?.data?.map((item) => item.id);
  const updated = await op('video.liveStreams.update', () => live.update(stream.id, {
    passthrough: 'node-changed', reconnect_window: 90, max_continuous_duration: 7200,
  }));
  facts.updated = [updated?.passthrough, updated?.reconnect_window, updated?.max_continuous_duration];
  const playback = await op('video.liveStreams.createPlaybackId', () => live.createPlaybackId(stream.id,
    { policy: 'signed' }));
  if (playback) {
    const again = await op('video.liveStreams.retrievePlaybackId', () => live.retrievePlaybackId(stream.id,
      playback.id));
    facts.playbackPolicy = again?.policy;
    const target = await op('video.playbackIds.retrieve', () => mux.video.playbackIds.retrieve(playback.id));
    facts.playbackObject = target?.object;
    await op('video.liveStreams.deletePlaybackId', () => live.deletePlaybackId(stream.id, playback.id));
    facts.deletedPlaybackId = await refusedWith(() => live.retrievePlaybackId(stream.id, playback.id));
  }
  const simulcast = await op('video.liveStreams.createSimulcastTarget', () => live.createSimulcastTarget(stream.id,
    { url: 'rtmps://push.example.com/live', stream_key: 'k', passthrough: 'p' }));
  if (simulcast) {
    const again = await op('video.liveStreams.retrieveSimulcastTarget', () => live.retrieveSimulcastTarget(
      stream.id, simulcast.id));
    facts.simulcastStatus = again?.status;
    await op('video.liveStreams.deleteSimulcastTarget', () => live.deleteSimulcastTarget(stream.id, simulcast.id));
  }
  await op('video.liveStreams.disable', () => live.disable(stream.id));
  facts.disabledStatus = (await live.retrieve(stream.id)).status;
  await op('video.liveStreams.enable', () => live.enable(stream.id));
  await op('video.liveStreams.complete', () => live.complete(stream.id));
  const reset = await op('video.liveStreams.resetStreamKey', () => live.resetStreamKey(stream.id));
  facts.resetKey = reset?.stream_key ?? null;
  await op('video.liveStreams.delete', () => live.delete(stream.id));
  facts.afterDelete = await refusedWith(() => live.retrieve(stream.id));
}
facts.invalidWindow = await refusedWith(() => live.create({ reconnect_window: 5000 }));

process.stdout.write(JSON.stringify({ operations, facts }));
