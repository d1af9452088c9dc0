// Module resolution hooks (node:module register): map `cloudflare:workers` to our shim, and
// accept the extensionless relative ESM imports @cloudflare/containers uses (`./lib/container`),
// which workerd's bundler resolves but Node does not.

const SHIM = new URL('./cloudflare-workers.mjs', import.meta.url).href;

export async function resolve(specifier, context, nextResolve) {
  if (specifier === 'cloudflare:workers') {
    return { url: SHIM, shortCircuit: true };
  }
  try {
    return await nextResolve(specifier, context);
  } catch (error) {
    const relative = specifier.startsWith('./') || specifier.startsWith('../');
    if (error?.code !== 'ERR_MODULE_NOT_FOUND' || !relative) throw error;
    for (const suffix of ['.js', '/index.js']) {
      try {
        return await nextResolve(specifier + suffix, context);
      } catch {
        // try the next candidate
      }
    }
    throw error;
  }
}
