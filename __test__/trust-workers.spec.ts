/**
 * Worker threads that die in the middle of a delivery — process.exit(), an uncaught
 * throw, worker.terminate() — leave no descriptor open in the process: neither the
 * channel's sockets nor the descriptors of messages that were received but not yet
 * handed to a listener.
 */
import test from 'ava'
import { Worker } from 'node:worker_threads'

import { closeAll, fixture, leakChecked, openFdCount, tempFile } from './helpers'

const leakFree = leakChecked(test)

const HOW = {
  exit: 'calls process.exit()',
  throw: 'throws (uncaught)',
  terminate: 'is terminated by the main thread',
} as const

for (const mode of Object.keys(HOW) as (keyof typeof HOW)[]) {
  leakFree(`a worker whose listener ${HOW[mode]} at message 5 of 200 (each with a descriptor) leaves no descriptor open`, async (t) => {
    t.timeout(30_000)
    const file = tempFile('duplicated into 200 messages')
    const before = openFdCount()
    const worker = new Worker(fixture('trust-worker-die.js'), { workerData: { mode, fd: file.fd, count: 200 } })
    const errors: string[] = []
    worker.on('error', (e) => errors.push(e.message))
    // Not events.once(): it would reject on the worker's 'error'.
    const exited = new Promise<number>((resolve) => worker.once('exit', resolve))
    const said: string[] = []
    const at5 = new Promise<void>((resolve) =>
      worker.on('message', (m: string) => {
        said.push(m)
        resolve()
      }),
    )
    if (mode === 'terminate') {
      await at5
      await worker.terminate()
    }
    const code = await exited
    await new Promise((r) => setImmediate(r)) // a message posted just before dying
    t.deepEqual(said, ['at 5'], 'the worker died in the middle of the batch, at message 5')
    t.is(code, mode === 'exit' ? 0 : 1)
    t.deepEqual(errors, mode === 'throw' ? ['the worker listener failed at message 5'] : [])
    await new Promise((r) => setTimeout(r, 50))
    t.is(openFdCount(), before, 'every descriptor the worker received or queued is closed')
    closeAll([file.fd])
  })
}
