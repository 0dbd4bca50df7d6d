// Mux's Node SDK (@mux/mux-node, unmodified) run against kinoray: every VOD operation kinoray offers, as a
// user's code would call it, with only baseURL changed. Driven by tests/test_mux_node.py, which passes the
// servers and inputs in KINORAY_TEST_CONFIG (JSON) and checks what this prints independently (ffprobe on the
// signed stream and thumbnail, the webhooks it received).
//
// Prints one JSON object: {"operations": [{"name", "ok", "error"?}...], "facts": {...}}. An operation that throws
// is recorded with the SDK's error (class name, HTTP status, message) and the run goes on, so one refusal does
// not hide the others.
import http from 'node:http';
import Mux from '@mux/mux-node';
import { config, mux, op, operations } from './sdk_ops.mjs';
const facts = {};

async function collect(iterable, most = 1000) {
  const items = [];
  for await (const item of iterable) {
    items.push(item);
    if (items.length >= most) throw new Error(`auto-paging did not end after ${most} items`);
  }
  return items;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitReady(assetId) {
  const deadline = Date.now() + config.readySeconds * 1000;
  for (;;) {
    const asset = await mux.video.assets.retrieve(assetId);
    if (asset.status === 'ready' || asset.status === 'errored') return asset;
    if (Date.now() > deadline) throw new Error(`asset ${assetId} still ${asset.status}`);
    await sleep(300);
  }
}

// A receiver for webhooks: every POST kept with its raw body and headers, for webhooks.unwrap.
const received = [];
const receiver = http.createServer((request, response) => {
  const chunks = [];
  request.on('data', (chunk) => chunks.push(chunk));
  request.on('end', () => {
    received.push({ body: Buffer.concat(chunks).toString('utf8'), headers: request.headers });
    response.writeHead(200).end();
  });
});
await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
const address = `http://127.0.0.1:${receiver.address().port}/mux-webhooks`;

// --- webhooks (system) ---------------------------------------------------------------------------------------
const webhook = await op('system.webhooks.create', () => mux.system.webhooks.create({ address }));
facts.webhookSecretShownOnCreate = typeof webhook?.signing_secret === 'string' && webhook.signing_secret.length > 0;
if (webhook) {
  const again = await op('system.webhooks.retrieve', () => mux.system.webhooks.retrieve(webhook.id));
  facts.webhookSecretHiddenOnRead = again !== undefined && again.signing_secret === undefined;
  facts.webhookAddress = again?.address;
  const listed = await op('system.webhooks.list (auto-paging)', () => collect(mux.system.webhooks.list({ limit: 1 })));
  facts.webhookListed = listed?.some((item) => item.id === webhook.id) ?? false;
  await op('system.webhooks.create (duplicate address refused)', async () => {
    try {
      await mux.system.webhooks.create({ address });
    } catch (error) {
      if (error instanceof Mux.ConflictError) return;
      throw error;
    }
    throw new Error('a second webhook with the same address was accepted');
  });
}

// --- assets --------------------------------------------------------------------------------------------------
const created = [];
for (const [index, url] of config.inputs.entries()) {
  const asset = await op('video.assets.create', () =>
    mux.video.assets.create({
      inputs: [{ url }],
      playback_policies: ['public', 'signed'],
      passthrough: `node-${index}`,
      video_quality: 'basic',
    }),
  );
  if (asset) created.push(asset);
}
facts.createdStatus = created.map((asset) => asset.status);

const ready = [];
for (const asset of created) {
  const done = await op('video.assets.retrieve (until ready)', () => waitReady(asset.id));
  if (done) ready.push(done);
}
facts.readyStatus = ready.map((asset) => asset.status);
const asset = ready[0];
if (asset) {
  facts.assetId = asset.id;
  facts.duration = asset.duration;
  facts.maxResolutionTier = asset.max_resolution_tier;
  facts.trackTypes = asset.tracks?.map((track) => track.type).sort();
  const listed = await op('video.assets.list (auto-paging)', () => collect(mux.video.assets.list({ limit: 1 })));
  facts.assetsListed = listed?.map((item) => item.id) ?? [];
  const firstPage = await op('video.assets.list (one page)', () => mux.video.assets.list({ limit: 1, page: 1 }));
  facts.firstPageSize = firstPage?.data?.length;
  const updated = await op('video.assets.update', () => mux.video.assets.update(asset.id, { passthrough: 'renamed' }));
  facts.updatedPassthrough = updated?.passthrough;
  const info = await op('video.assets.retrieveInputInfo', () => mux.video.assets.retrieveInputInfo(asset.id));
  facts.inputInfoTrackTypes = info?.[0]?.file?.tracks?.map((track) => track.type).sort();

  // static renditions, the legacy mp4_support switch and master access (the files are checked by the Python side)
  const rendition = await op('video.assets.createStaticRendition', () =>
    mux.video.assets.createStaticRendition(asset.id, { resolution: 'audio-only', passthrough: 'node' }),
  );
  if (rendition) {
    facts.staticRenditionCreated = { status: rendition.status, name: rendition.name };
    const settled = await op('video.assets.retrieve (static rendition ready)', async () => {
      const deadline = Date.now() + config.readySeconds * 1000;
      for (;;) {
        const found = (await mux.video.assets.retrieve(asset.id)).static_renditions?.files?.find(
          (file) => file.id === rendition.id);
        if (found && found.status !== 'preparing') return found;
        if (Date.now() > deadline) throw new Error('static rendition still preparing');
        await sleep(300);
      }
    });
    facts.staticRenditionReady = settled && { status: settled.status, name: settled.name, ext: settled.ext };
  }
  const capped = await op('video.assets.updateMP4Support', () =>
    mux.video.assets.updateMP4Support(asset.id, { mp4_support: 'capped-1080p' }),
  );
  facts.mp4SupportAfterUpdate = capped?.mp4_support;
  const master = await op('video.assets.updateMasterAccess', () =>
    mux.video.assets.updateMasterAccess(asset.id, { master_access: 'temporary' }),
  );
  facts.masterAccessAfterUpdate = master?.master_access;
  const masterReady = await op('video.assets.retrieve (master ready)', async () => {
    const deadline = Date.now() + config.readySeconds * 1000;
    for (;;) {
      const current = await mux.video.assets.retrieve(asset.id);
      if (current.master?.status === 'ready' || current.master?.status === 'errored') return current.master;
      if (Date.now() > deadline) throw new Error(`master still ${current.master?.status}`);
      await sleep(300);
    }
  });
  facts.masterStatus = masterReady?.status;
  facts.masterUrl = masterReady?.url;
  if (rendition) {
    await op('video.assets.deleteStaticRendition', () => mux.video.assets.deleteStaticRendition(asset.id, rendition.id));
    facts.deletedStaticRendition = rendition.name;
  }

  // playback ids
  const publicId = asset.playback_ids.find((item) => item.policy === 'public').id;
  const signedId = asset.playback_ids.find((item) => item.policy === 'signed').id;
  facts.publicPlaybackId = publicId;
  facts.signedPlaybackId = signedId;
  const extra = await op('video.assets.createPlaybackId', () =>
    mux.video.assets.createPlaybackId(asset.id, { policy: 'public' }),
  );
  if (extra) {
    const got = await op('video.assets.retrievePlaybackId', () => mux.video.assets.retrievePlaybackId(asset.id, extra.id));
    facts.retrievedPlaybackPolicy = got?.policy;
    await op('video.assets.deletePlaybackId', () => mux.video.assets.deletePlaybackId(asset.id, extra.id));
    facts.deletedPlaybackId = extra.id;
  }
  const byId = await op('video.playbackIds.retrieve', () => mux.video.playbackIds.retrieve(publicId));
  facts.playbackIdObject = byId?.object;

  // signing keys and mux.jwt: the tokens are played by the Python side with ffprobe
  const key = await op('system.signingKeys.create', () => mux.system.signingKeys.create());
  if (key) {
    const keys = await op('system.signingKeys.list (auto-paging)', () => collect(mux.system.signingKeys.list({ limit: 1 })));
    facts.signingKeyListed = keys?.some((item) => item.id === key.id) ?? false;
    const signer = { keyId: key.id, keySecret: key.private_key };
    facts.videoToken = await op('jwt.signPlaybackId (video)', () =>
      mux.jwt.signPlaybackId(signedId, { ...signer, type: 'video', expiration: '1h' }),
    );
    facts.thumbnailToken = await op('jwt.signPlaybackId (thumbnail, width in claims)', () =>
      mux.jwt.signPlaybackId(signedId, { ...signer, type: 'thumbnail', expiration: '1h', params: { width: '96', time: '1' } }),
    );
    facts.storyboardToken = await op('jwt.signPlaybackId (storyboard)', () =>
      mux.jwt.signPlaybackId(signedId, { ...signer, type: 'storyboard', expiration: '1h' }),
    );
    const tokens = await op('jwt.signPlaybackId (several types)', () =>
      mux.jwt.signPlaybackId(signedId, { ...signer, type: ['video', 'thumbnail'], expiration: '1h' }),
    );
    facts.multiTokens = tokens ? Object.keys(tokens).sort() : [];
    facts.multiPlaybackToken = tokens?.['playback-token'];
    await op('system.signingKeys.retrieve', () => mux.system.signingKeys.retrieve(key.id));
  }
}

// --- direct uploads ------------------------------------------------------------------------------------------
const upload = await op('video.uploads.create', () =>
  mux.video.uploads.create({ cors_origin: '*', new_asset_settings: { playback_policies: ['public'] } }),
);
if (upload) {
  facts.uploadUrlPrefix = upload.url?.split('/upload/')[0];
  const uploads = await op('video.uploads.list (auto-paging)', () => collect(mux.video.uploads.list({ limit: 1 })));
  facts.uploadListed = uploads?.some((item) => item.id === upload.id) ?? false;
  await op('video.uploads.retrieve', () => mux.video.uploads.retrieve(upload.id));
  const cancelled = await op('video.uploads.cancel', () => mux.video.uploads.cancel(upload.id));
  facts.uploadStatusAfterCancel = cancelled?.status;
}

// --- deleting ------------------------------------------------------------------------------------------------
const doomed = ready[1];
if (doomed) {
  await op('video.assets.delete', () => mux.video.assets.delete(doomed.id));
  await op('video.assets.retrieve (deleted: NotFoundError)', async () => {
    try {
      await mux.video.assets.retrieve(doomed.id);
    } catch (error) {
      if (error instanceof Mux.NotFoundError) return;
      throw error;
    }
    throw new Error('a deleted asset was still found');
  });
}

// --- webhooks received, unwrapped with the SDK (signature checked) ------------------------------------------
if (webhook) {
  const deadline = Date.now() + config.webhookSeconds * 1000;
  const wanted = new Set(config.expectWebhooks);
  const seen = () => new Set(received.map((item) => JSON.parse(item.body).type));
  while (Date.now() < deadline && ![...wanted].every((type) => seen().has(type))) await sleep(200);
  const unwrapped = await op('webhooks.unwrap', async () =>
    Promise.all(received.map((item) => mux.webhooks.unwrap(item.body, item.headers, webhook.signing_secret))),
  );
  facts.webhookTypes = unwrapped ? [...new Set(unwrapped.map((event) => event.type))].sort() : [];
  facts.webhookAttempts = unwrapped?.map((event) => Array.isArray(event.attempts));
  await op('webhooks.unwrap (tampered body refused)', async () => {
    const [first] = received;
    try {
      await mux.webhooks.unwrap(first.body.replace('"type"', '"type" '), first.headers, webhook.signing_secret);
    } catch {
      return;
    }
    throw new Error('a tampered body verified');
  });
  const off = await op('system.webhooks.update', () => mux.system.webhooks.update(webhook.id, { enabled: false }));
  facts.webhookEnabledAfterUpdate = off?.enabled;
  await op('system.webhooks.delete', () => mux.system.webhooks.delete(webhook.id));
}

receiver.close();
process.stdout.write(JSON.stringify({ operations, facts }));
