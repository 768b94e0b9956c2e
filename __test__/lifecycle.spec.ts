/**
 * Lifetimes: worker threads that load the addon and go away (with channels open, too),
 * processes that must exit by themselves, and a receiver at its descriptor limit.
 */
import test from 'ava'
import { once } from 'node:events'
import fs from 'node:fs'
import { Worker } from 'node:worker_threads'

import { Channel, spawn } from '..'
import { closeAll, closing, fixture, identity, leakChecked, run, tempFile } from './helpers'

const leakFree = leakChecked(test)

leakFree('several worker threads load, use and close channels; the main thread keeps working', async (t) => {
  const [mainA, mainB] = Channel.pair()
  const mainReceived: string[] = []
  mainB.on('message', (m) => mainReceived.push(m.data.toString()))
  const workers = Array.from({ length: 4 }, () => new Worker(fixture('worker.js'), { workerData: { count: 500 } }))
  // Listen for exit at once: a worker may exit while we still wait for another's reply.
  const exited = workers.map((w) => once(w, 'exit'))
  const replies = await Promise.all(workers.map((w) => once(w, 'message')))
  t.deepEqual(
    replies.map(([r]) => r),
    workers.map(() => ({ received: 500, open: false })),
  )
  await Promise.all(exited)
  mainA.send('still working')
  await new Promise((r) => setTimeout(r, 50))
  t.deepEqual(mainReceived, ['still working'])
  mainA.close()
  mainB.close()
  await closing(mainB)
})

leakFree('terminating a worker with open channels closes them (no leak, no crash)', async (t) => {
  const worker = new Worker(fixture('worker.js'), { workerData: { count: 100, leaveOpen: true } })
  const [reply] = await once(worker, 'message')
  t.deepEqual(reply, { received: 100, open: true })
  await worker.terminate()
  // The leak check proves the environment cleanup hook closed both channel ends.
  const [a, b] = Channel.pair()
  const got = new Promise<string>((resolve) => b.once('message', (m) => resolve(m.data.toString())))
  a.send('after the worker')
  t.is(await got, 'after the worker')
  a.close()
  b.close()
  await closing(b)
})

async function exitsWithin(mode: string, ms: number): Promise<{ exited: boolean; out: string }> {
  const proc = run(process.execPath, [fixture('lifetime.js'), mode], { stdio: ['ignore', 'pipe', 'pipe'] })
  const timer = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), ms))
  const result = await Promise.race([proc.exited, timer])
  if (result === 'timeout') {
    proc.child.kill('SIGKILL')
    await proc.exited.catch(() => undefined)
    return { exited: false, out: proc.stdout() }
  }
  return { exited: true, out: proc.stdout() }
}

leakFree('the process exits by itself once every channel is closed', async (t) => {
  const r = await exitsWithin('closed', 10_000)
  t.true(r.exited)
  t.is(r.out, 'got hello\n')
})

leakFree("the process exits by itself when every channel is unref'd", async (t) => {
  const r = await exitsWithin('unref', 10_000)
  t.true(r.exited)
  t.is(r.out, 'got hello\n')
})

leakFree("control: an open, ref'd, reading channel keeps the process alive", async (t) => {
  const r = await exitsWithin('open', 1500)
  t.false(r.exited)
  t.is(r.out, 'got hello\n')
})

leakFree('a receiver at its descriptor limit gets ERR_FDS_TRUNCATED, closes cleanly, leaks nothing', async (t) => {
  if (process.platform !== 'linux') {
    t.pass('uses /proc/self/fd in the child; Linux only')
    return
  }
  const { child, channel } = spawn('/bin/sh', ['-c', `ulimit -n 96 && exec "${process.execPath}" "${fixture('rlimit-child.js')}"`], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let out = ''
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  const exited = once(child, 'exit')
  const file = tempFile('many copies of me')
  const closed = closing(channel)
  channel.on('error', () => {}) // EPIPE once the child has given up is expected
  channel.on('message', () => {})
  // One message per turn, so that each goes in its own sendmsg (frames sent in one turn
  // are coalesced, and their descriptors with them).
  for (let i = 0; i < 10 && !channel.closed; i++) {
    channel.send(`batch ${i}`, { fds: Array.from({ length: 30 }, () => file.fd) })
    await new Promise((r) => setTimeout(r, 20))
  }
  if (!channel.closed) channel.end()
  const [code] = await exited
  await closed
  t.is(code, 0, 'no crash')
  const report = JSON.parse(out)
  t.is(report.error, 'ERR_FDS_TRUNCATED')
  t.true(report.messages >= 1 && report.messages < 10, `received ${report.messages} whole messages first`)
  t.is(report.held, report.messages * 30, 'every delivered message had all its descriptors')
  t.is(report.heldAtClose, report.held, 'at close, only the delivered descriptors are open (the truncated ones were closed)')
  t.is(report.leftover, 0, "nothing of the channel's or of the passed file's is left open")
  closeAll([file.fd])
})

leakFree('unref() and ref() return the channel, and a closed channel ignores them', (t) => {
  const [a, b] = Channel.pair()
  t.is(a.unref(), a)
  t.is(a.ref(), a)
  a.close()
  b.close()
  t.is(a.unref(), a)
  t.is(a.fd, -1)
  fs.fstatSync(0) // still alive
})

leakFree('a sender at its descriptor limit: send() throws EMFILE, queues nothing of that message, and the channel keeps working', async (t) => {
  const file = tempFile('the one file')
  const { child, channel } = spawn('/bin/sh', ['-c', `ulimit -n 64 && exec "${process.execPath}" "${fixture('rlimit-sender.js')}" "${file.path}"`], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let out = ''
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  const exited = once(child, 'close') // 'exit' can come before the stdout pipe is closed
  while (!out.includes('full\n')) await once(child.stdout!, 'data')
  // Only now read: every queued message, each with the file, then "after", then the end.
  const want = identity(file.fd)
  let withTheFile = 0
  let last = ''
  channel.on('message', (m) => {
    if (m.fds.length === 1 && identity(m.fds[0]!) === want && m.data.length === 512 * 1024) withTheFile++
    closeAll(m.fds)
    last = m.data.toString()
  })
  await new Promise<void>((resolve) => channel.once('end', () => resolve()))
  channel.close()
  const [code] = await exited
  t.is(code, 0)
  const report = JSON.parse(out.split('\n')[1]!)
  t.is(report.error?.code, 'EMFILE')
  t.is(report.queuedAfterError, report.error.queuedBefore, 'the refused message left nothing in the queue')
  t.true(report.accepted > 0)
  t.is(withTheFile, report.accepted, 'every accepted message arrived once, with its file')
  t.is(last, 'after', 'and the channel kept working')
  closeAll([file.fd])
})
