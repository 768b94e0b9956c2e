/**
 * The loader: each way loading can fail gives one error with a stable code, in a real
 * child process that loads a real copy of the package; and the versions that must agree
 * (Cargo, package.json, the platform packages) do.
 */
import test from 'ava'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import { BINARY_ENV, DEFAULT_MAX_MESSAGE_BYTES, loadError, MAX_FDS_PER_MESSAGE, platformPackage } from '..'
import { leakChecked, run } from './helpers'

const leakFree = leakChecked(test)
const ROOT = path.join(__dirname, '..')
const VERSION: string = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version
const BINARY = fs.readdirSync(ROOT).find((f) => f.endsWith('.node'))

/** A copy of the package's JavaScript in a fresh directory, with or without the binary. */
function copyPackage(options: { binary: boolean; version?: string }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'socketpair-loader-'))
  for (const f of ['index.js', 'loader.js', 'binding.js']) fs.copyFileSync(path.join(ROOT, f), path.join(dir, f))
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'))
  if (options.version) pkg.version = options.version
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify(pkg))
  if (options.binary && BINARY) fs.copyFileSync(path.join(ROOT, BINARY), path.join(dir, BINARY))
  return dir
}

/**
 * Loads the package at `dir` in a child process (after `preload`, if any), then calls
 * socketpair() and a Channel round trip; reports what happened as JSON.
 */
async function probe(dir: string, env: NodeJS.ProcessEnv = {}, preload?: string) {
  const script = `
    const out = {}
    try {
      const s = require(${JSON.stringify(dir)})
      out.loaded = true
      out.loadError = s.loadError() ? s.loadError().code : null
      try {
        const [a, b] = s.socketpair()
        s.sendmsg(a, 'ping')
        out.received = s.recvmsg(b).data.toString()
        s.closeFds([a, b])
      } catch (e) { out.code = e.code; out.message = e.message }
      try { s.Channel.pair() } catch (e) { out.channelCode = e.code }
    } catch (e) { out.loaded = false; out.thrown = e.message }
    process.stdout.write(JSON.stringify(out))
  `
  const args = [...(preload ? ['-e', `${preload};${script}`] : ['-e', script])]
  const child = run(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, [BINARY_ENV]: '', ...env },
  })
  const code = await child.exited
  if (code !== 0) throw new Error(`probe exited ${code}: ${child.stderr()}`)
  return JSON.parse(child.stdout())
}

leakFree('the binary loaded here, and its version is the package version', (t) => {
  t.is(loadError(), undefined)
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const binding = require('../binding.js')
  t.is(binding.binaryVersion(), VERSION)
  // The limits index.ts states without loading the binary are the binary's own.
  t.is(binding.maxFdsPerMessage(), MAX_FDS_PER_MESSAGE)
  t.is(binding.DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_MESSAGE_BYTES)
  t.regex(platformPackage(), /^socketpair-(linux-(x64|arm64)-(gnu|musl)|darwin-(x64|arm64)|freebsd-x64)$/)
})

leakFree('Cargo, package.json and every platform package carry the same version', (t) => {
  const cargo = fs.readFileSync(path.join(ROOT, 'Cargo.toml'), 'utf8')
  t.is(/\[workspace\.package\][^[]*?\nversion = "([^"]+)"/.exec(cargo)?.[1], VERSION)
  const platforms = fs.readdirSync(path.join(ROOT, 'npm'))
  t.true(platforms.length >= 7)
  for (const p of platforms) {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'npm', p, 'package.json'), 'utf8'))
    t.is(pkg.version, VERSION, p)
    t.is(pkg.name, `socketpair-${p}`)
    t.deepEqual(pkg.files, [`socketpair.${p}.node`])
    t.truthy(pkg.os && pkg.cpu, `${p} declares os and cpu`)
    if (p.startsWith('linux-')) t.deepEqual(pkg.libc, [p.endsWith('-musl') ? 'musl' : 'glibc'])
    t.falsy(pkg.scripts, `${p} has no scripts`)
  }
})

leakFree('a copy with its binary works', async (t) => {
  const dir = copyPackage({ binary: true })
  const r = await probe(dir)
  t.like(r, { loaded: true, loadError: null, received: 'ping' })
  fs.rmSync(dir, { recursive: true })
})

leakFree('ERR_BINARY_MISSING: loading works, every call says which package is missing and why', async (t) => {
  const dir = copyPackage({ binary: false })
  const r = await probe(dir)
  t.like(r, { loaded: true, loadError: 'ERR_BINARY_MISSING', code: 'ERR_BINARY_MISSING', channelCode: 'ERR_BINARY_MISSING' })
  t.true(r.message.includes(platformPackage()), r.message)
  t.regex(r.message, /--omit=optional/)
  t.regex(r.message, /lockfile/)
  t.regex(r.message, new RegExp(BINARY_ENV))
  fs.rmSync(dir, { recursive: true })
})

leakFree('ERR_BINARY_MISMATCH: a binary from another release is refused, naming both versions', async (t) => {
  const dir = copyPackage({ binary: true, version: '9.9.9' })
  const r = await probe(dir)
  t.like(r, { loaded: true, loadError: 'ERR_BINARY_MISMATCH', code: 'ERR_BINARY_MISMATCH' })
  t.true(r.message.includes(`version ${VERSION}`), r.message)
  t.true(r.message.includes('9.9.9'), r.message)
  fs.rmSync(dir, { recursive: true })
})

leakFree(`${BINARY_ENV} loads the file it names, and says so when it cannot`, async (t) => {
  const dir = copyPackage({ binary: false })
  const good = await probe(dir, { [BINARY_ENV]: path.join(ROOT, BINARY!) })
  t.like(good, { loaded: true, loadError: null, received: 'ping' })
  const missing = path.join(dir, 'nowhere.node')
  const bad = await probe(dir, { [BINARY_ENV]: missing })
  t.like(bad, { loaded: true, code: 'ERR_BINARY_MISSING' })
  t.true(bad.message.includes(`${BINARY_ENV} points at ${missing}`), bad.message)
  fs.rmSync(dir, { recursive: true })
})

for (const [platform, arch] of [
  ['win32', 'x64'],
  ['linux', 'riscv64'],
  ['aix', 'ppc64'],
]) {
  leakFree(`ERR_UNSUPPORTED_PLATFORM on ${platform} ${arch}: loading works, every call says what is supported`, async (t) => {
    const dir = copyPackage({ binary: true })
    const preload = `Object.defineProperty(process, 'platform', { value: '${platform}' }); Object.defineProperty(process, 'arch', { value: '${arch}' })`
    const r = await probe(dir, {}, preload)
    t.like(r, { loaded: true, loadError: 'ERR_UNSUPPORTED_PLATFORM', code: 'ERR_UNSUPPORTED_PLATFORM', channelCode: 'ERR_UNSUPPORTED_PLATFORM' })
    t.true(r.message.includes(`${platform} ${arch}`), r.message)
    // The supported list comes from package.json's napi.targets: every target is named.
    t.regex(r.message, /Linux x64 \(gnu\), arm64 \(gnu\), x64 \(musl\), arm64 \(musl\); macOS x64, arm64; FreeBSD x64/)
    if (platform === 'win32') t.regex(r.message, /Windows has no socketpair/)
    fs.rmSync(dir, { recursive: true })
  })
}
