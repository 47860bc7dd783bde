/**
 * Builds dist/ once before the suite, so tests that run the real `portcullis` binary (CLI, child-process
 * RSS measurements) exercise exactly what users run. Fails the run if the build fails.
 */
import { execFileSync } from 'node:child_process';

export default function setup(): void {
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], { stdio: 'inherit' });
}
