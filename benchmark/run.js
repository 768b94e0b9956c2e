// npm run bench — every IPC option Node has, side by side in one run, between two
// processes, each case verified (count, order, content; descriptors by identity).
// Prints a table of medians and ratios and writes benchmark/results/latest.json.
//
//   BENCH_RUNS=5 npm run bench        more runs per case (default 3)
//   BENCH_QUICK=1 npm run bench       a tenth of the messages (a smoke test)
'use strict'
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const ROOT = path.join(__dirname, '..')
const RAW = path.join(ROOT, 'target', 'release', 'examples', 'raw_bench')
const RUNS = Number(process.env.BENCH_RUNS || 3)
const SCALE = process.env.BENCH_QUICK ? 0.1 : 1
const MiB = 1024 * 1024

// Enough messages that every case runs for a good fraction of a second: short runs are
// at the mercy of a shared machine's scheduling.
const SIZES = [
  { size: 64, count: 400_000 },
  { size: 4096, count: 100_000 },
  { size: 65536, count: 20_000 },
  { size: MiB, count: 1_000 },
]
const ONEWAY_IMPLS = ['raw', 'net', 'fork-json', 'fork-advanced', 'channel', 'channel-seqpacket']
const PINNED = hasTaskset()

function hasTaskset() {
  try {
    execFileSync('taskset', ['-c', '0', 'true'])
    return true
  } catch {
    return false
  }
}

/** Runs one case once; returns { ok, count, seconds }. */
function runOnce(impl, mode, size, count, nfds, pin) {
  const args =
    impl === 'raw'
      ? [RAW, mode, String(size), String(count), ...(mode === 'fds' ? [String(nfds)] : [])]
      : [process.execPath, path.join(__dirname, 'driver.js'), impl, mode, String(size), String(count), String(nfds)]
  const [cmd, ...rest] = pin ? ['taskset', '-c', '0', ...args] : args
  try {
    const out = execFileSync(cmd, rest, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 300_000 })
    return JSON.parse(out.trim().split('\n').pop())
  } catch (err) {
    return { ok: false, count: 0, seconds: 0, error: String(err.message || err) }
  }
}

function median(values) {
  const v = [...values].sort((a, b) => a - b)
  return v[v.length >> 1]
}

/** Runs a case RUNS times; returns the median rate and whether every run verified. */
function measure(impl, mode, size, count, nfds = 0, pin = false) {
  count = Math.max(10, Math.round(count * SCALE))
  const runs = Array.from({ length: RUNS }, () => runOnce(impl, mode, size, count, nfds, pin))
  const ok = runs.every((r) => r.ok && r.count === count && r.seconds > 0)
  const rate = ok ? median(runs.map((r) => count / r.seconds)) : 0
  const row = { impl, mode, size, nfds, count, runs: runs.map((r) => r.seconds), ok, rate, mbps: (rate * size) / MiB }
  const shown = mode === 'pingpong' ? `${fmtUs(rate)} per round trip` : `${fmtRate(rate)} msg/s  ${row.mbps.toFixed(1)} MB/s`
  process.stderr.write(`  ${pad(impl, 18)} ${pad(mode, 8)} ${pad(fmtSize(size), 6)} ${nfds ? `${nfds} fd ` : '     '} ${ok ? shown : 'FAIL'}\n`)
  return row
}

const pad = (s, n) => String(s).padEnd(n)
const fmtSize = (n) => (n >= MiB ? `${n / MiB}MiB` : n >= 1024 ? `${n / 1024}KiB` : `${n}B`)
const fmtRate = (r) => (r >= 1e6 ? `${(r / 1e6).toFixed(2)}M` : r >= 1e3 ? `${(r / 1e3).toFixed(1)}k` : r.toFixed(0))
const fmtUs = (r) => (r ? `${(1e6 / r).toFixed(1)} µs` : 'FAIL')
const ratio = (a, b) => (a && b ? a / b : NaN)

function main() {
  if (!fs.existsSync(RAW)) throw new Error(`${RAW} is missing: run \`npm run bench\`, which builds it`)
  const machine = {
    cpus: os.cpus().length,
    model: os.cpus()[0]?.model ?? 'unknown',
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    platform: `${process.platform} ${os.release()}`,
    node: process.version,
  }
  process.stderr.write(`socketpair benchmark: ${RUNS} runs per case, medians; ${machine.model}, ${machine.cpus} CPUs, Node ${machine.node}\n`)
  const rows = []
  process.stderr.write('one-way\n')
  for (const { size, count } of SIZES) {
    for (const impl of ONEWAY_IMPLS) {
      if (impl === 'channel-seqpacket' && (size > 65536 || process.platform === 'darwin')) continue
      rows.push(measure(impl, 'oneway', size, count))
    }
  }
  process.stderr.write('descriptor passing (64 B messages)\n')
  for (const nfds of [1, 16]) {
    for (const impl of ['raw', 'channel', 'fork-json']) {
      if (impl === 'fork-json' && nfds > 1) continue // fork passes one handle per message
      rows.push(measure(impl, 'fds', 64, impl === 'fork-json' ? 3000 : 50_000, nfds))
    }
  }
  process.stderr.write(`round trip (64 B, ${PINNED ? 'both processes pinned to CPU 0' : 'not pinned: taskset missing'})\n`)
  for (const impl of ['raw', 'net', 'fork-json', 'channel']) rows.push(measure(impl, 'pingpong', 64, 20_000, 0, PINNED))

  const find = (impl, mode, size, nfds = 0) => rows.find((r) => r.impl === impl && r.mode === mode && r.size === size && r.nfds === nfds)?.rate ?? 0
  const ratios = []
  const addRatio = (name, value, target, better = 'higher') =>
    ratios.push({ name, value, target, met: better === 'higher' ? value >= target : value <= target })
  addRatio('64 B one-way: Channel / net.Socket+framing', ratio(find('channel', 'oneway', 64), find('net', 'oneway', 64)), 2)
  addRatio("64 B one-way: Channel / fork 'json'", ratio(find('channel', 'oneway', 64), find('fork-json', 'oneway', 64)), 3)
  addRatio('4 KiB one-way: Channel / net.Socket+framing', ratio(find('channel', 'oneway', 4096), find('net', 'oneway', 4096)), 1.5)
  addRatio('64 KiB one-way: Channel / raw', ratio(find('channel', 'oneway', 65536), find('raw', 'oneway', 65536)), 0.9)
  addRatio('1 MiB one-way: Channel / raw', ratio(find('channel', 'oneway', MiB), find('raw', 'oneway', MiB)), 0.9)
  addRatio('1 fd per message: Channel / raw', ratio(find('channel', 'fds', 64, 1), find('raw', 'fds', 64, 1)), 0.5)
  addRatio('1 fd per message: Channel / fork handle passing', ratio(find('channel', 'fds', 64, 1), find('fork-json', 'fds', 64, 1)), 25)
  // Round trip: time per round trip, so the ratio is Channel's time over net's.
  addRatio(
    '64 B round trip (same core): Channel time / net.Socket time',
    ratio(find('net', 'pingpong', 64), find('channel', 'pingpong', 64)),
    0.8,
    'lower',
  )

  const allOk = rows.every((r) => r.ok)
  process.stdout.write('\n| case | measured | target | |\n|---|---|---|---|\n')
  for (const r of ratios) {
    process.stdout.write(`| ${r.name} | ${Number.isNaN(r.value) ? 'FAIL' : `${r.value.toFixed(2)}×`} | ${r.target}× | ${r.met ? 'met' : 'NOT met'} |\n`)
  }
  process.stdout.write('\n| implementation | case | size | fds | msg/s | MB/s | verified |\n|---|---|---|---|---|---|---|\n')
  for (const r of rows) {
    const perf = r.mode === 'pingpong' ? `${fmtUs(r.rate)} / round trip` : fmtRate(r.rate)
    process.stdout.write(`| ${r.impl} | ${r.mode} | ${fmtSize(r.size)} | ${r.nfds || ''} | ${perf} | ${r.mode === 'pingpong' ? '' : r.mbps.toFixed(1)} | ${r.ok ? 'ok' : 'FAIL'} |\n`)
  }
  const out = path.join(__dirname, 'results')
  fs.mkdirSync(out, { recursive: true })
  const file = path.join(out, 'latest.json')
  fs.writeFileSync(
    file,
    JSON.stringify({ date: new Date().toISOString(), machine, runs: RUNS, scale: SCALE, pinned: PINNED, rows, ratios, allOk }, null, 2),
  )
  process.stdout.write(`\n${allOk ? 'every case verified' : 'SOME CASES FAILED VERIFICATION'}; JSON in ${path.relative(ROOT, file)}\n`)
  process.exitCode = allOk ? 0 : 1
}

main()
