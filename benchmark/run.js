// npm run bench — every IPC option Node has, side by side in one run, between two
// processes, every byte of every message verified (count, order, content; descriptors
// by identity). Prints the ratios against their targets, with the spread between runs,
// and the full table, and writes benchmark/results/latest.json.
//
//   BENCH_RUNS=5 npm run bench        more runs per case (default 3)
//   BENCH_QUICK=1 npm run bench       a tenth of the messages (a smoke test)
//   BENCH_ONLY=1MiB,channel,raw       only the cases matching every kind of word given:
//                                     sizes (64B 4KiB 64KiB 1MiB, or bytes), cases
//                                     (oneway fds pingpong retain), implementations
//   SOCKETPAIR_BINARY=/path/x.node    the addon build to measure (passed through to every
//                                     process: run twice with two builds for an A/B)
//   BENCH_CORRUPT=<seq>[:<byte>]      self-test: the senders corrupt one byte of message
//                                     seq, and every case must then FAIL
//   BENCH_OUT=file.json               where to write the results; by default latest.json
//                                     for a full run, partial.json when any of
//                                     BENCH_QUICK, BENCH_ONLY or BENCH_CORRUPT is set
//
// Runs are interleaved: run 1 of every implementation of a case, then run 2, … so that
// each run-to-run ratio compares measurements taken close together in time.
'use strict'
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const ROOT = path.join(__dirname, '..')
const RAW = path.join(ROOT, 'target', 'release', 'examples', 'raw_bench')
const RUNS = Math.max(1, Number(process.env.BENCH_RUNS || 3))
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
const ALL_IMPLS = ONEWAY_IMPLS
const MODES = ['oneway', 'fds', 'pingpong', 'retain']
// Retained memory: the receiver keeps every 100th of 10,000 64-byte messages (fixed:
// the case is defined by these numbers, BENCH_QUICK does not scale it).
// Keep 100 of `count` received messages: of 10,000 (they arrive in a batch or two), and
// of 1,000,000 (every 10,000th: each kept message from a different read).
const RETAIN = [
  { size: 64, count: 10_000 },
  { size: 64, count: 1_000_000 },
]
const PINNED = hasTaskset()

function hasTaskset() {
  try {
    execFileSync('taskset', ['-c', '0', 'true'])
    return true
  } catch {
    return false
  }
}

/** BENCH_ONLY as { sizes, modes, impls } (each null when not restricted). */
function parseOnly(spec) {
  const only = { sizes: null, modes: null, impls: null }
  if (!spec) return only
  const add = (key, v) => (only[key] ??= new Set()).add(v)
  for (const raw of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const word = raw.toLowerCase()
    const size = /^\d+$/.test(word) ? Number(word) : parseSize(word)
    if (size !== null) add('sizes', size)
    else if (MODES.includes(word)) add('modes', word)
    else if (word === 'roundtrip') add('modes', 'pingpong')
    else if (ALL_IMPLS.includes(word)) add('impls', word)
    else throw new Error(`BENCH_ONLY: unknown word ${raw} (sizes: 64B 4KiB 64KiB 1MiB or bytes; cases: ${MODES.join(' ')}; implementations: ${ALL_IMPLS.join(' ')})`)
  }
  return only
}

function parseSize(word) {
  const m = /^(\d+)(b|kib|kb|k|mib|mb|m)$/.exec(word)
  if (!m) return null
  const unit = m[2].startsWith('m') ? MiB : m[2].startsWith('k') ? 1024 : 1
  return Number(m[1]) * unit
}

const ONLY = parseOnly(process.env.BENCH_ONLY)
const selected = (mode, size, impl) =>
  (!ONLY.modes || ONLY.modes.has(mode)) && (!ONLY.sizes || ONLY.sizes.has(size)) && (!ONLY.impls || ONLY.impls.has(impl))

/** Runs one case once; returns the driver's (or raw_bench's) result object. */
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
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  if (!v.length) return NaN
  return v.length % 2 ? v[v.length >> 1] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2
}
const min = (values) => Math.min(...values)
const max = (values) => Math.max(...values)

let heading = null // printed before the section's first case, if any runs

function section(title) {
  heading = title
}

/**
 * Runs one case for several implementations, RUNS times each, interleaved; returns one
 * row per implementation: the median rate, its min and max, and every run.
 */
function measure(impls, mode, size, count, { nfds = 0, pin = false, scale = true } = {}) {
  impls = impls.filter((impl) => selected(mode, size, impl))
  if (!impls.length) return []
  if (heading !== null) process.stderr.write(`${heading}\n`)
  heading = null
  if (impls.includes('raw') && !fs.existsSync(RAW)) throw new Error(`${RAW} is missing: run \`npm run bench\`, which builds it`)
  if (scale) count = Math.max(10, Math.round(count * SCALE))
  const runs = Object.fromEntries(impls.map((impl) => [impl, []]))
  for (let r = 0; r < RUNS; r++) {
    for (const impl of impls) runs[impl].push(runOnce(impl, mode, size, count, nfds, pin))
  }
  return impls.map((impl) => {
    const rs = runs[impl]
    const ok = rs.every((r) => r.ok && r.count === count && r.seconds > 0)
    const rates = rs.map((r) => (r.seconds > 0 ? count / r.seconds : 0))
    const rss = rs.map((r) => r.receiverMaxRssKiB).filter((v) => v > 0)
    const growth = rs.filter((r) => r.receiverMaxRssKiB > 0 && r.receiverReadyRssKiB > 0).map((r) => r.receiverMaxRssKiB - r.receiverReadyRssKiB)
    const row = {
      impl,
      mode,
      size,
      nfds,
      count,
      ok,
      rate: ok ? median(rates) : 0,
      rateMin: ok ? min(rates) : 0,
      rateMax: ok ? max(rates) : 0,
      mbps: ok ? (median(rates) * size) / MiB : 0,
      receiverMaxRssKiB: rss.length ? median(rss) : null,
      // Peak RSS above the receiver's RSS when it was ready (Node's own ~45 MiB excluded).
      receiverRssGrowthKiB: growth.length ? median(growth) : null,
      runs: rs,
    }
    if (mode === 'retain') {
      const retained = rs.map((r) => r.retained?.external ?? NaN)
      row.retainedBytes = ok ? median(retained) : NaN
      row.retainedMin = ok ? min(retained) : NaN
      row.retainedMax = ok ? max(retained) : NaN
    }
    process.stderr.write(`  ${pad(impl, 18)} ${pad(mode, 8)} ${pad(fmtSize(size), 6)} ${nfds ? pad(`${nfds} fd`, 6) : pad('', 6)} ${ok ? shown(row) : `FAIL ${rs.map((r) => r.error ?? (r.ok ? 'ok' : 'not verified')).join('; ')}`}\n`)
    return row
  })
}

/** A row's result in words, with the range over runs. */
function shown(row) {
  if (row.mode === 'pingpong') return `${fmtUs(row.rate)} per round trip (${fmtUs(row.rateMax)}–${fmtUs(row.rateMin)})`
  if (row.mode === 'retain') return `retains ${fmtBytes(row.retainedBytes)} (${fmtBytes(row.retainedMin)}–${fmtBytes(row.retainedMax)})`
  const rss = row.receiverMaxRssKiB ? `  receiver peak RSS ${fmtRss(row)}` : ''
  return `${fmtRate(row.rate)} msg/s (${fmtRate(row.rateMin)}–${fmtRate(row.rateMax)})  ${row.mbps.toFixed(1)} MB/s${rss}`
}

const pad = (s, n) => String(s).padEnd(n)
const fmtSize = (n) => (n >= MiB ? `${n / MiB}MiB` : n >= 1024 ? `${n / 1024}KiB` : `${n}B`)
const fmtRate = (r) => (r >= 1e6 ? `${(r / 1e6).toFixed(2)}M` : r >= 1e3 ? `${(r / 1e3).toFixed(1)}k` : r.toFixed(0))
const fmtUs = (r) => (r ? `${(1e6 / r).toFixed(1)} µs` : 'FAIL')
const fmtBytes = (b) =>
  !Number.isFinite(b) ? 'FAIL' : Math.abs(b) >= MiB ? `${(b / MiB).toFixed(2)} MiB` : Math.abs(b) >= 1024 ? `${(b / 1024).toFixed(1)} KiB` : `${b} B`
const fmtRss = (row) =>
  `${(row.receiverMaxRssKiB / 1024).toFixed(1)} MiB${row.receiverRssGrowthKiB === null ? '' : ` (+${(row.receiverRssGrowthKiB / 1024).toFixed(1)} receiving)`}`
const fmtX = (v) => (Number.isFinite(v) ? `${v.toFixed(2)}×` : 'FAIL')

function main() {
  const machine = {
    cpus: os.cpus().length,
    model: os.cpus()[0]?.model ?? 'unknown',
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    platform: `${process.platform} ${os.release()}`,
    node: process.version,
  }
  const addon = process.env.SOCKETPAIR_BINARY || null
  process.stderr.write(
    `socketpair benchmark: ${RUNS} run${RUNS > 1 ? 's' : ''} per case, medians (min–max); ${machine.model}, ${machine.cpus} CPUs, Node ${machine.node}` +
      `${addon ? `; addon ${addon}` : ''}${SCALE !== 1 ? '; QUICK: a tenth of the messages' : ''}${process.env.BENCH_ONLY ? `; only ${process.env.BENCH_ONLY}` : ''}` +
      `${process.env.BENCH_CORRUPT ? `; CORRUPTING message ${process.env.BENCH_CORRUPT}: every case must FAIL` : ''}\n`,
  )
  const rows = []
  section('one-way')
  for (const { size, count } of SIZES) {
    const impls = ONEWAY_IMPLS.filter((impl) => !(impl === 'channel-seqpacket' && (size > 65536 || process.platform === 'darwin')))
    rows.push(...measure(impls, 'oneway', size, count))
  }
  section('descriptor passing (64 B messages)')
  rows.push(...measure(['raw', 'channel'], 'fds', 64, 50_000, { nfds: 1 }))
  // fork passes one handle per message, slowly: fewer messages, and no 16-descriptor case.
  rows.push(...measure(['fork-json'], 'fds', 64, 3000, { nfds: 1 }))
  rows.push(...measure(['raw', 'channel'], 'fds', 64, 50_000, { nfds: 16 }))
  section(`round trip (64 B, ${PINNED ? 'both processes pinned to CPU 0' : 'not pinned: taskset missing'})`)
  rows.push(...measure(['raw', 'net', 'fork-json', 'channel'], 'pingpong', 64, 20_000, { pin: PINNED }))
  for (const { size, count } of RETAIN) {
    section(`retained memory (keep 100 of ${count.toLocaleString('en')} received ${size}-byte messages)`)
    rows.push(...measure(['channel', 'net'], 'retain', size, count, { scale: false }))
  }

  const ratios = computeRatios(rows)
  const allOk = rows.every((r) => r.ok)

  process.stdout.write('\n| case | measured | run to run | target | |\n|---|---|---|---|---|\n')
  for (const r of ratios) {
    const fmt = r.unit === 'bytes' ? fmtBytes : fmtX
    const target = r.target === null ? 'info' : `${r.better === 'higher' ? '≥' : '≤'} ${r.unit === 'bytes' ? fmtBytes(r.target) : `${r.target}×`}`
    const verdict = r.target === null ? '' : !Number.isFinite(r.value) ? 'FAIL' : r.met ? 'met' : 'NOT met'
    process.stdout.write(`| ${r.name} | ${fmt(r.value)} | ${fmt(r.min)} – ${fmt(r.max)} | ${target} | ${verdict} |\n`)
  }
  process.stdout.write('\n| implementation | case | size | fds | median | min – max | MB/s | receiver peak RSS | verified |\n|---|---|---|---|---|---|---|---|---|\n')
  for (const r of rows) {
    let perf
    let range
    if (r.mode === 'pingpong') {
      perf = `${fmtUs(r.rate)} / round trip`
      range = `${fmtUs(r.rateMax)} – ${fmtUs(r.rateMin)}`
    } else if (r.mode === 'retain') {
      perf = `${fmtBytes(r.retainedBytes)} retained`
      range = `${fmtBytes(r.retainedMin)} – ${fmtBytes(r.retainedMax)}`
    } else {
      perf = `${fmtRate(r.rate)} msg/s`
      range = `${fmtRate(r.rateMin)} – ${fmtRate(r.rateMax)}`
    }
    const mbps = r.mode === 'oneway' || r.mode === 'fds' ? r.mbps.toFixed(1) : ''
    const rss = r.receiverMaxRssKiB && r.mode !== 'pingpong' ? fmtRss(r) : ''
    process.stdout.write(`| ${r.impl} | ${r.mode} | ${fmtSize(r.size)} | ${r.nfds || ''} | ${perf} | ${range} | ${mbps} | ${rss} | ${r.ok ? 'ok' : 'FAIL'} |\n`)
  }

  const partial = SCALE !== 1 || process.env.BENCH_ONLY || process.env.BENCH_CORRUPT
  const file = process.env.BENCH_OUT ? path.resolve(process.env.BENCH_OUT) : path.join(__dirname, 'results', partial ? 'partial.json' : 'latest.json')
  fs.mkdirSync(path.dirname(file), { recursive: true })
  fs.writeFileSync(
    file,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        machine,
        addon,
        runs: RUNS,
        scale: SCALE,
        only: process.env.BENCH_ONLY || null,
        corrupt: process.env.BENCH_CORRUPT || null,
        pinned: PINNED,
        ratios,
        rows,
        allOk,
      },
      null,
      2,
    ),
  )
  process.stdout.write(`\n${allOk ? 'every case verified' : 'SOME CASES FAILED VERIFICATION'}; JSON in ${path.relative(ROOT, file)}\n`)
  process.exitCode = allOk ? 0 : 1
}

/**
 * The ratios and their targets. `value` is the ratio of the medians; `min`/`max` the
 * range of the per-run ratios (run i of one implementation against run i of the other:
 * they ran one right after the other). Cases not run are left out.
 */
function computeRatios(rows) {
  const find = (impl, mode, size, nfds = 0) => rows.find((r) => r.impl === impl && r.mode === mode && r.size === size && r.nfds === nfds)
  const out = []
  const rate = (run, row) => (run.ok && run.seconds > 0 ? row.count / run.seconds : NaN)
  const rss = (run) => run.receiverMaxRssKiB ?? NaN
  const rssGrowth = (run) => (run.receiverMaxRssKiB > 0 && run.receiverReadyRssKiB > 0 ? run.receiverMaxRssKiB - run.receiverReadyRssKiB : NaN)

  /** a / b of `metric`, per run and of the medians. */
  function ratio(name, a, b, target, { better = 'higher', metric = rate, invert = false } = {}) {
    if (!a || !b) return
    const perRun = a.runs.map((run, i) => {
      const x = metric(run, a)
      const y = metric(b.runs[i], b)
      return invert ? y / x : x / y
    })
    const okBoth = a.ok && b.ok
    const med = (row) => median(row.runs.map((run) => metric(run, row)))
    const value = okBoth ? (invert ? med(b) / med(a) : med(a) / med(b)) : NaN
    const finite = perRun.filter(Number.isFinite)
    out.push({
      name,
      value,
      min: okBoth && finite.length ? min(finite) : NaN,
      max: okBoth && finite.length ? max(finite) : NaN,
      perRun: okBoth ? perRun : [],
      target,
      better,
      met: target !== null && Number.isFinite(value) && (better === 'higher' ? value >= target : value <= target),
    })
  }

  const ch = (mode, size, nfds = 0) => find('channel', mode, size, nfds)
  ratio('64 B one-way: Channel / net.Socket', ch('oneway', 64), find('net', 'oneway', 64), 2)
  ratio('64 B one-way: Channel / raw', ch('oneway', 64), find('raw', 'oneway', 64), 1.2)
  ratio('4 KiB one-way: Channel / net.Socket', ch('oneway', 4096), find('net', 'oneway', 4096), 1.5)
  ratio('64 KiB one-way: Channel / net.Socket', ch('oneway', 65536), find('net', 'oneway', 65536), 1.2)
  ratio('64 KiB one-way: Channel / raw', ch('oneway', 65536), find('raw', 'oneway', 65536), 0.8)
  ratio('1 MiB one-way: Channel / raw', ch('oneway', MiB), find('raw', 'oneway', MiB), 0.9)
  // Round trip: time per round trip, so Channel's time over net's is net's rate over Channel's.
  ratio('64 B round trip (same core): Channel time / net.Socket time', ch('pingpong', 64), find('net', 'pingpong', 64), 0.8, {
    better: 'lower',
    invert: true,
  })
  ratio('1 descriptor per message: Channel / raw', ch('fds', 64, 1), find('raw', 'fds', 64, 1), 1)

  const retained = (impl, { size, count }, target) => {
    const row = rows.find((r) => r.impl === impl && r.mode === 'retain' && r.size === size && r.count === count)
    if (!row) return
    const values = row.runs.map((run) => run.retained?.external ?? NaN)
    out.push({
      name: `retained by 100 kept of ${count.toLocaleString('en')} ${size}-byte messages (${impl === 'net' ? 'net.Socket + framer' : 'Channel'})`,
      unit: 'bytes',
      value: row.ok ? row.retainedBytes : NaN,
      min: row.ok ? min(values) : NaN,
      max: row.ok ? max(values) : NaN,
      perRun: row.ok ? values : [],
      target,
      better: 'lower',
      met: target !== null && row.ok && row.retainedBytes <= target,
    })
  }
  for (const c of RETAIN) retained('channel', c, MiB)
  ratio('receiver peak RSS, 1 MiB one-way: Channel / net.Socket', ch('oneway', MiB), find('net', 'oneway', MiB), 1, {
    better: 'lower',
    metric: rss,
  })

  // Informational.
  ratio('receiver peak RSS above its idle RSS, 1 MiB one-way: Channel / net.Socket', ch('oneway', MiB), find('net', 'oneway', MiB), null, {
    better: 'lower',
    metric: rssGrowth,
  })
  ratio("64 B one-way: Channel / fork 'json'", ch('oneway', 64), find('fork-json', 'oneway', 64), null)
  ratio('1 descriptor per message: Channel / fork handle passing', ch('fds', 64, 1), find('fork-json', 'fds', 64, 1), null)
  for (const c of RETAIN) retained('net', c, null)
  return out
}

main()
