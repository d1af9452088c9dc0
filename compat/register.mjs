// Preloaded with `node --import ./register.mjs`: installs the resolution hooks in shim/.
import { register } from 'node:module';

register('./shim/hooks.mjs', import.meta.url);
