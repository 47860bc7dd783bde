/**
 * File writing shared by the commands that edit what a running gateway watches (certificates, CRLs, token
 * files): a reader sees the old file or the new one, never half of one.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Writes through a temporary file in the same directory and renames it over `path`: readers (the
 * gateway's cert watcher) see the old file or the new one, never half of one. The mode is set on the
 * temporary file before any byte is written, so a key is never readable by others, even briefly.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode: number): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(tmp, 'wx', mode);
  try {
    await handle.chmod(mode); // open()'s mode is filtered by the umask
    await (typeof data === 'string' ? handle.writeFile(data, 'utf8') : handle.writeFile(data));
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(tmp, { force: true });
    throw error;
  }
  await handle.close();
  try {
    await rename(tmp, path);
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
}
