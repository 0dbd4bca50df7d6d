// What the scripts that drive Mux's Node SDK share: `op` runs one SDK operation and records it in `operations`
// ({name, ok, error?}); an operation that throws is recorded with the SDK's error (class name, HTTP status,
// message) and the run goes on, so one refusal does not hide the others. `config` is the test's
// KINORAY_TEST_CONFIG (JSON); `mux` the SDK's client on kinoray's API, only baseURL changed.
import Mux from '@mux/mux-node';

export const config = JSON.parse(process.env.KINORAY_TEST_CONFIG);
export const mux = new Mux({
  tokenId: config.tokenId,
  tokenSecret: config.tokenSecret,
  baseURL: config.api,
  maxRetries: 0,
  timeout: 60_000,
});
export const operations = [];

export async function op(name, call) {
  try {
    const value = await call();
    operations.push({ name, ok: true });
    return value;
  } catch (error) {
    operations.push({
      name,
      ok: false,
      error: `${error?.constructor?.name}: ${error?.status ?? ''} ${error?.message ?? error}`.slice(0, 500),
    });
    return undefined;
  }
}
