/**
 * Release metadata: what npm and GitHub check only when a release actually runs, checked
 * here on every `npm test` instead. The main package and every platform package name
 * the same repository (npm provenance rejects a publish whose repository.url does not
 * match the repository it runs from), version, license and engines; and the workflows
 * use no action older than the majors listed below (GitHub removed Node 20 from its
 * runners, so each must be on a release that runs on node24). Needs no built addon.
 */
import test from 'ava'
import fs from 'node:fs'
import path from 'node:path'

const ROOT = path.join(__dirname, '..')
const WORKFLOWS = path.join(ROOT, '.github', 'workflows')

/** The one repository every package.json names; see RELEASING.md before changing it. */
const REPOSITORY = { type: 'git', url: 'git+https://github.com/socketpair-js/socketpair.git' }

/**
 * The oldest major each action may be used at: the newest major whose action.yml says
 * `runs.using: node24` (or composite, which runs no Node of its own), as checked in each
 * action's repository. A number is the minimum major (`@vN`); a string is the one ref
 * allowed. An action missing here fails the test: add it deliberately, with its check.
 */
const MIN_ACTION_MAJOR: Record<string, number | string> = {
  'actions/checkout': 7, // node24 since v5; v7 is the newest (package-template uses v7)
  'actions/setup-node': 7, // node24 since v5; v7 drops only the dummy NODE_AUTH_TOKEN
  'actions/setup-python': 7, // node24 since v6
  'actions/upload-artifact': 7, // node24 since v6 (v5 still defaults to node20)
  'actions/download-artifact': 8, // node24 since v7; v8 as package-template
  'Swatinem/rust-cache': 2, // v2.9: node24
  'vmactions/freebsd-vm': 1, // v1.5: node24
  'taiki-e/install-action': 2, // composite
  'dtolnay/rust-toolchain': 'stable', // composite, a branch per toolchain
}

interface Manifest {
  name: string
  version: string
  license?: string
  engines?: Record<string, string>
  repository?: unknown
  bugs?: { url?: string }
  homepage?: string
}

function readManifest(file: string): Manifest {
  return JSON.parse(fs.readFileSync(file, 'utf8'))
}

const root = readManifest(path.join(ROOT, 'package.json'))
const platformDirs = fs.readdirSync(path.join(ROOT, 'npm')).sort()
const platforms = platformDirs.map((dir) => ({ dir, pkg: readManifest(path.join(ROOT, 'npm', dir, 'package.json')) }))

/** Every `uses:` of every workflow, with where it is. */
function workflowUses(): { file: string; line: number; ref: string }[] {
  const found = []
  for (const file of fs.readdirSync(WORKFLOWS).filter((f) => /\.ya?ml$/.test(f))) {
    const lines = fs.readFileSync(path.join(WORKFLOWS, file), 'utf8').split('\n')
    for (const [i, text] of lines.entries()) {
      const m = /^\s*(?:-\s+)?uses:\s*['"]?([^'"\s#]+)/.exec(text)
      if (m) found.push({ file, line: i + 1, ref: m[1]! })
    }
  }
  return found
}

test('the main package names its GitHub repository, issues and home page', (t) => {
  t.deepEqual(root.repository, REPOSITORY)
  const web = REPOSITORY.url.replace(/^git\+/, '').replace(/\.git$/, '')
  t.regex(web, /^https:\/\/github\.com\/[^/]+\/[^/]+$/)
  t.is(root.bugs?.url, `${web}/issues`)
  t.is(root.homepage, `${web}#readme`)
})

test('every platform package names the same repository, version, license and engines as the main package', (t) => {
  t.true(platforms.length > 0)
  for (const { dir, pkg } of platforms) {
    t.deepEqual(pkg.repository, root.repository, `npm/${dir}: repository`)
    t.is(pkg.version, root.version, `npm/${dir}: version`)
    t.is(pkg.license, root.license, `npm/${dir}: license`)
    t.deepEqual(pkg.engines, root.engines, `npm/${dir}: engines`)
  }
})

test('each platform package is named socketpair-<its directory>, one per napi target', (t) => {
  for (const { dir, pkg } of platforms) t.is(pkg.name, `socketpair-${dir}`)
  const targets: string[] = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).napi.targets
  t.is(platforms.length, targets.length, `npm/ has ${platformDirs.join(', ')}; napi.targets has ${targets.join(', ')}`)
})

test('the workflows use no action older than its listed major, and no action that is not listed', (t) => {
  const uses = workflowUses()
  t.true(uses.length > 0, 'found the workflows’ uses: lines')
  for (const { file, line, ref } of uses) {
    if (ref.startsWith('./')) continue // a workflow or action of this repository
    const where = `${file}:${line} ${ref}`
    const m = /^([^/@]+\/[^/@]+)(?:\/[^@]*)?@(.+)$/.exec(ref)
    if (!m) {
      t.fail(`${where}: not owner/name@ref`)
      continue
    }
    const [, action, version] = m as unknown as [string, string, string]
    const min = MIN_ACTION_MAJOR[action]
    if (min === undefined) {
      t.fail(`${where}: ${action} is not in MIN_ACTION_MAJOR; check that the major used runs on node24 and add it`)
    } else if (typeof min === 'string') {
      t.is(version, min, where)
    } else {
      const major = /^v(\d+)(?:\.\d+)*$/.exec(version)
      t.truthy(major, `${where}: expected @vN`)
      if (major) t.true(Number(major[1]) >= min, `${where}: ${action} must be at v${min} or later`)
    }
  }
})

test('a release tells napi pre-publish not to create a GitHub release, and publishes a pre-release under next', (t) => {
  const release = fs.readFileSync(path.join(WORKFLOWS, 'release.yml'), 'utf8')
  const prePublish = release.split('\n').filter((l) => /\bnpx napi pre-publish\b/.test(l))
  t.true(prePublish.length > 0)
  for (const l of prePublish) t.regex(l, /--no-gh-release/)
  t.regex(release, /\*-\*\) set -- --tag next/)
})
