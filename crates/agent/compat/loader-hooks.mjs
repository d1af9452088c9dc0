const shimUrl = new URL('./cf-workers-shim.mjs', import.meta.url).href;
export async function resolve(specifier, context, next) {
  if (specifier === 'cloudflare:workers') return { url: shimUrl, shortCircuit: true };
  try { return await next(specifier, context); }
  catch (err) {
    if (err?.code === 'ERR_MODULE_NOT_FOUND' && specifier.startsWith('.'))
      for (const s of ['.js', '/index.js']) { try { return await next(specifier + s, context); } catch {} }
    throw err;
  }
}
