/**
 * Test helpers: open-descriptor counting, file identity, temporary files, and child
 * processes that are awaited to the end.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import type { ExecutionContext, TestFn } from 'ava'

import type { Channel } from '..'

/** The directory listing this process's open descriptors. */
const FD_DIR = fs.existsSync('/proc/self/fd') ? '/proc/self/fd' : '/dev/fd'

/** How many descriptors this process has open (the listing's own handle excluded). */
export function openFdCount(): number {
  return fs.readdirSync(FD_DIR).length - 1
}

/** `dev:ino` of what a descriptor points to: equal means the same file or socket. */
export function identity(fd: number): string {
  const s = fs.fstatSync(fd)
  return `${s.dev}:${s.ino}`
}

/** Whether a descriptor is close-on-exec (Linux: /proc/self/fdinfo; null elsewhere). */
export function isCloexec(fd: number): boolean | null {
  if (process.platform !== 'linux') return null
  const info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8')
  const flags = /flags:\s*([0-7]+)/.exec(info)
  if (!flags) throw new Error(`no flags in fdinfo for ${fd}`)
  return (parseInt(flags[1]!, 8) & 0o2000000) !== 0
}

let counter = 0

/** A temporary file with `contents`; returns its path and a read-only descriptor. */
export function tempFile(contents: string): { path: string; fd: number } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'socketpair-test-'))
  const file = path.join(dir, `file-${process.pid}-${counter++}.txt`)
  fs.writeFileSync(file, contents)
  return { path: file, fd: fs.openSync(file, 'r') }
}

/** Reads a whole file through a descriptor, from offset 0 (the offset is shared). */
export function readThrough(fd: number): string {
  const size = fs.fstatSync(fd).size
  const buf = Buffer.alloc(size)
  let off = 0
  while (off < size) off += fs.readSync(fd, buf, off, size - off, off)
  return buf.toString('utf8')
}

export function closeAll(fds: Iterable<number>): void {
  for (const fd of fds) fs.closeSync(fd)
}

/** A spawned child and a promise of its exit code (rejects on a signal). */
export function run(
  command: string,
  args: string[],
  options: SpawnOptions,
): { child: ChildProcess; exited: Promise<number>; stdout: () => string; stderr: () => string } {
  const child = spawn(command, args, options)
  let out = ''
  let err = ''
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()))
  const exited = new Promise<number>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code, signal) => {
      if (signal) reject(new Error(`${command} died of ${signal}: ${err}`))
      else resolve(code ?? -1)
    })
  })
  return { child, exited, stdout: () => out, stderr: () => err }
}

/**
 * Resolves once `channel` has emitted 'close' (at once if it has already: 'close' is
 * emitted on the tick after `closed` turns true). Unlike events.once, an 'error' event
 * does not reject it.
 */
export function closing(channel: Channel): Promise<void> {
  if (channel.closed) return new Promise((resolve) => setImmediate(resolve))
  return new Promise((resolve) => channel.once('close', () => resolve()))
}

/** Closes both ends of a pair and resolves once both have emitted 'close'. */
export function closeBoth(a: Channel, b: Channel): Promise<void> {
  a.close()
  b.close()
  return Promise.all([closing(a), closing(b)]).then(() => undefined)
}

/** Path of a fixture script. */
export function fixture(name: string): string {
  return path.join(__dirname, 'fixtures', name)
}

/**
 * Around every test: `leakChecked(title, impl)` registers a serial test that
 * fails unless the count of open descriptors after `impl` equals the count before.
 * (The check lives inside the test, not in an afterEach hook, so that a leak counts as
 * that test's failure.) A warm-up first spawns a child once, so that descriptors Node
 * opens lazily (the signal pipe, the thread pool's) exist before the first baseline.
 */
/** Per-test limit: generous, since CI machines are shared and slow. */
const TEST_TIMEOUT_MS = 60_000

export function leakChecked(test: TestFn): (title: string, impl: (t: ExecutionContext) => unknown) => void {
  test.before(async () => {
    await run('python3', ['-c', 'pass'], { stdio: 'ignore' }).exited
    fs.readFileSync(__filename)
  })
  let finished = 0
  let started = 0
  // A test that timed out may leave something behind that keeps this worker process alive
  // (ava waits for it to exit); once every test has reported, end it.
  test.after.always(() => {
    if (finished < started) setTimeout(() => process.exit(1), 1000)
  })
  return (title, impl) => {
    test.serial(title, async (t) => {
      // A hang fails this test with a message (ava's own inactivity timeout instead
      // aborts the whole run, and its TAP reporter crashes on it).
      t.timeout(TEST_TIMEOUT_MS, `${title} did not finish within ${TEST_TIMEOUT_MS / 1000} s`)
      started++
      const before = openFdCount()
      try {
        await impl(t)
      } finally {
        finished++
      }
      t.is(openFdCount(), before, 'open descriptors are back to where they were')
    })
  }
}

/**
 * Runs `fn` with this process's 'uncaughtException' handlers (ava's among them) replaced
 * by one that records what arrives; restores them afterwards.
 */
export async function catchingUncaught<T>(fn: (uncaught: unknown[]) => Promise<T>): Promise<T> {
  const saved = process.listeners('uncaughtException')
  process.removeAllListeners('uncaughtException')
  const uncaught: unknown[] = []
  const handler = (err: unknown): void => {
    uncaught.push(err)
  }
  process.on('uncaughtException', handler)
  try {
    return await fn(uncaught)
  } finally {
    process.off('uncaughtException', handler)
    for (const l of saved) process.on('uncaughtException', l)
  }
}
