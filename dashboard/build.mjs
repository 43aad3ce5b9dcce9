// Builds the dashboard into a directory the router serves (./flux up: $FLUX_HOME/web):
// app.js bundled by esbuild with supabase-js and uPlot (no CDN), and the static files.
// usage: node build.mjs OUT_DIR
import { build } from 'esbuild';
import { copyFile, mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2];
if (!out) {
  console.error('usage: node build.mjs OUT_DIR');
  process.exit(2);
}
await mkdir(out, { recursive: true });
await build({
  entryPoints: [join(here, 'src/app.js')],
  bundle: true,
  format: 'esm',
  target: 'es2022',
  minify: true,
  legalComments: 'linked',
  outfile: join(out, 'app.js'),
  logLevel: 'warning',
});
await copyFile(join(here, 'src/index.html'), join(out, 'index.html'));
await copyFile(join(here, 'src/style.css'), join(out, 'style.css'));
await copyFile(join(here, 'node_modules/uplot/dist/uPlot.min.css'), join(out, 'uplot.css'));
