/**
 * Finds and loads the native half of socketpair, and explains any failure in one error
 * with a stable `code`:
 *
 * - `ERR_UNSUPPORTED_PLATFORM`: this OS or CPU has no build (Windows among them).
 * - `ERR_BINARY_MISSING`: the platform package with the `.node` file is not installed, or
 *   the file could not be loaded.
 * - `ERR_BINARY_MISMATCH`: the binary comes from another release than this package.
 *
 * Loading never throws: `import 'socketpair'` works everywhere, so that cross-platform
 * code can import it, and every call that needs the binary throws the error instead.
 *
 * `SOCKETPAIR_BINARY=/path/to/socketpair.node` loads that file instead (a build of your
 * own, or a copy an Electron app unpacked somewhere); the version check still applies.
 *
 * Finding the binary is the generated `binding.js`'s job; this wrapper only classifies
 * what goes wrong. The platforms and the package names come from package.json (`napi`).
 */

import type * as Binding from './binding'

export type NativeBinding = typeof Binding

/** The environment variable naming a `.node` file to load instead of the packaged one. */
export const BINARY_ENV = 'SOCKETPAIR_BINARY'

interface PackageJson {
  version: string
  napi: { binaryName: string; targets: string[] }
}

// package.json sits beside this file both in the repository and in the installed package.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const PACKAGE = require('./package.json') as PackageJson

/** A build target (a Rust triple of package.json's `napi.targets`) in Node's terms. */
interface Target {
  platform: string
  arch: string
  abi: string | null
}

const ARCHES: Record<string, string> = { x86_64: 'x64', aarch64: 'arm64', i686: 'ia32', armv7: 'arm' }
const NAMES: Record<string, string> = { linux: 'Linux', darwin: 'macOS', freebsd: 'FreeBSD' }

/** The targets prebuilt binaries exist for, from package.json (what the release builds). */
export const TARGETS: readonly Target[] = PACKAGE.napi.targets.map((triple) => {
  const [cpu = '', , os = '', abi] = triple.split('-')
  const platform = os === 'apple' || triple.includes('-apple-') ? 'darwin' : os
  return { platform, arch: ARCHES[cpu] ?? cpu, abi: platform === 'linux' ? (abi ?? null) : null }
})

function supportedText(): string {
  const byPlatform = new Map<string, Set<string>>()
  for (const t of TARGETS) {
    const key = NAMES[t.platform] ?? t.platform
    const set = byPlatform.get(key) ?? new Set<string>()
    set.add(t.arch + (t.abi ? ` (${t.abi})` : ''))
    byPlatform.set(key, set)
  }
  return [...byPlatform].map(([os, arches]) => `${os} ${[...arches].join(', ')}`).join('; ')
}

/** An Error with a stable `code`, as every error of this package. */
export class LoadError extends Error {
  readonly code: string
  constructor(code: string, message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause })
    this.name = 'Error'
    this.code = code
  }
}

function isMusl(): boolean {
  if (process.platform !== 'linux') return false
  // The same test as the generated binding.js: glibc reports its version, musl does not.
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined
  return !report?.header?.glibcVersionRuntime
}

/** The npm package that carries the binary for this process's platform. */
export function platformPackage(): string {
  const libc = process.platform === 'linux' ? (isMusl() ? '-musl' : '-gnu') : ''
  return `${PACKAGE.napi.binaryName}-${process.platform}-${process.arch}${libc}`
}

function packageVersion(): string {
  return PACKAGE.version
}

function firstLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err)
  return text.split('\n')[0] ?? text
}

function load(): NativeBinding {
  const override = process.env[BINARY_ENV]
  if (override) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      return check(require(override) as NativeBinding, override)
    } catch (err) {
      if (err instanceof LoadError) throw err
      throw new LoadError(
        'ERR_BINARY_MISSING',
        `socketpair: ${BINARY_ENV} points at ${override}, which could not be loaded: ${firstLine(err)}`,
        err,
      )
    }
  }
  if (!TARGETS.some((t) => t.platform === process.platform && t.arch === process.arch)) {
    throw new LoadError(
      'ERR_UNSUPPORTED_PLATFORM',
      `socketpair does not run on ${process.platform} ${process.arch}: it is built for ${supportedText()}. ` +
        (process.platform === 'win32'
          ? 'Windows has no socketpair(2) with descriptor passing. '
          : '') +
        `The module loads anywhere so that cross-platform code can import it, but every call throws this error here. ` +
        `(To try a binary you built yourself, set ${BINARY_ENV} to its path.)`,
    )
  }
  let loaded: NativeBinding
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    loaded = require('./binding.js') as NativeBinding
  } catch (err) {
    const pkg = platformPackage()
    throw new LoadError(
      'ERR_BINARY_MISSING',
      `socketpair: the native binary for ${process.platform} ${process.arch} could not be loaded. ` +
        `It ships in the package ${pkg}, an optional dependency that npm installs only on a matching system. ` +
        `It goes missing when dependencies were installed with --no-optional / --omit=optional, ` +
        `from a lockfile made on another OS or CPU (delete node_modules and the lockfile's entry, then npm install), ` +
        `or when a bundler or packager left the .node file behind (mark socketpair as external; in Electron, asarUnpack it). ` +
        `Or set ${BINARY_ENV} to the path of a socketpair .node file. First cause: ${firstLine(err)}`,
      err,
    )
  }
  return check(loaded, 'the installed binary')
}

function check(loaded: NativeBinding, where: string): NativeBinding {
  if (!loaded || typeof loaded.binaryVersion !== 'function') {
    throw new LoadError('ERR_BINARY_MISMATCH', `socketpair: ${where} is not a socketpair binary (it has no binaryVersion())`)
  }
  const binary = loaded.binaryVersion()
  const expected = packageVersion()
  if (binary !== expected) {
    throw new LoadError(
      'ERR_BINARY_MISMATCH',
      `socketpair: ${where} is version ${binary}, but the JavaScript package is ${expected}. ` +
        `Both must come from the same release: reinstall (npm install socketpair@${expected}) ` +
        `so that the platform package ${platformPackage()} matches, and check that no cache or copied ` +
        `node_modules mixes versions.`,
    )
  }
  return loaded
}

let binding: NativeBinding | undefined
let failure: LoadError | undefined
try {
  binding = load()
} catch (err) {
  failure = err instanceof LoadError ? err : new LoadError('ERR_BINARY_MISSING', `socketpair: ${firstLine(err)}`, err)
}

/** The loaded binding, or the load error (a fresh copy each time, with the same code and message). */
export function native(): NativeBinding {
  if (binding) return binding
  const f = failure as LoadError
  throw new LoadError(f.code, f.message, f.cause)
}

/** Whether the binary loaded; `loadError()` says why not. */
export function loadError(): LoadError | undefined {
  return failure
}
