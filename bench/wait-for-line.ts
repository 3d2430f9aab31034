import type { ChildProcess } from 'node:child_process';

/** Resolves once the child has printed `text` on its stdout; rejects if it exits first. */
export function waitForLine(child: ChildProcess, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = '';
    child.stdout!.on('data', (d: Buffer) => {
      seen += d.toString();
      if (seen.includes(text)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`server exited with ${code} before "${text}"`)));
  });
}
