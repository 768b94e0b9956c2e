// npm run fuzz — the frame decoder against generated hostile streams (see
// crates/core/examples/fuzz_decoder.rs), one process per CPU, each with its own seed.
//
//   FUZZ_INPUTS=10000000 npm run fuzz   inputs in all (default 10 million)
//   FUZZ_SEED=1234 npm run fuzz         base seed (default: random; printed, so a run can
//                                       be repeated exactly)
//
// Every process first replays crates/core/fuzz/corpus; a failing input is saved there
// as crash-<seed>-<n>.bin. Exits non-zero on any finding.
'use strict'
const { execFileSync, spawn } = require('node:child_process')
const os = require('node:os')
const path = require('node:path')

const ROOT = path.join(__dirname, '..')
const total = Number(process.env.FUZZ_INPUTS || 10_000_000)
const base = Number(process.env.FUZZ_SEED || Math.floor(Math.random() * 2 ** 31))
const workers = Math.max(1, Math.min(os.cpus().length, 8))

execFileSync('cargo', ['build', '--release', '--quiet', '-p', 'socketpair-core', '--example', 'fuzz_decoder'], {
  cwd: ROOT,
  stdio: 'inherit',
})
const bin = path.join(ROOT, 'target', 'release', 'examples', 'fuzz_decoder')
console.log(`fuzzing the decoder: ${total.toLocaleString('en')} inputs, ${workers} processes, base seed ${base}`)
const started = Date.now()

const runs = Array.from({ length: workers }, (_, i) => {
  const inputs = Math.floor(total / workers) + (i < total % workers ? 1 : 0)
  const seed = base + i
  return new Promise((resolve) => {
    const child = spawn(bin, ['--inputs', String(inputs), '--seed', String(seed)], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.on('close', (code) => {
      let report = null
      try {
        report = JSON.parse(out.trim().split('\n').pop())
      } catch {}
      resolve({ seed, code, report })
    })
  })
})

Promise.all(runs).then((results) => {
  const sum = (k) => results.reduce((s, r) => s + (r.report ? r.report[k] : 0), 0)
  const findings = sum('findings')
  const failed = results.filter((r) => r.code !== 0 || !r.report)
  const secs = (Date.now() - started) / 1000
  console.log(
    `${sum('inputs').toLocaleString('en')} inputs (${sum('wellFormed').toLocaleString('en')} well-formed, ` +
      `${sum('mutated').toLocaleString('en')} mutated, ${sum('random').toLocaleString('en')} random) ` +
      `+ corpus replayed ${workers}× — ${findings} findings, ${secs.toFixed(0)} s`,
  )
  if (failed.length) {
    console.error(`FAILED: seeds ${failed.map((r) => r.seed).join(', ')} (repeat one with FUZZ_SEED and one process)`)
    process.exit(1)
  }
})
