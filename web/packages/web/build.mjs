// Builds @herald/web: ESM modules with type declarations (tsc) for bundlers, and a
// self-contained worker.js (esbuild, centrifuge included) that the browser loads as
// the SharedWorker script.
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { build } from 'esbuild';

rmSync('dist', { recursive: true, force: true });
execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { stdio: 'inherit' });
await build({
  entryPoints: ['src/worker.ts'],
  bundle: true,
  format: 'iife',
  target: 'es2020',
  minify: true,
  outfile: 'dist/worker.js',
  logLevel: 'warning',
});
