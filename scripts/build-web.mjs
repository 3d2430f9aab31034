// Builds the web chat into dist/web: web/app.ts bundled with the SDK (esbuild, one ES module, no CDN), beside the
// page, its stylesheet and the service worker. Chorus serves these files from its HTTP port (history-api/routes-web.ts).
import { copyFileSync, mkdirSync } from 'node:fs';
import { build } from 'esbuild';

const out = 'dist/web';
mkdirSync(out, { recursive: true });
await build({
  entryPoints: ['web/app.ts'],
  outfile: `${out}/app.js`,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: true,
  legalComments: 'linked',
  logLevel: 'warning',
});
for (const file of ['index.html', 'app.css', 'sw.js']) copyFileSync(`web/${file}`, `${out}/${file}`);
