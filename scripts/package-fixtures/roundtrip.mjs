// ESM consumer: the same round trip through `import`.
import assert from 'node:assert'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { spawn, closeFds, MAX_FDS_PER_MESSAGE } from 'socketpair'
import * as whole from 'socketpair'

assert.equal(MAX_FDS_PER_MESSAGE, 253)
assert.equal(typeof whole.Channel.pair, 'function')
const here = path.dirname(fileURLToPath(import.meta.url))
const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'consumer-')), 'note.txt')
fs.writeFileSync(file, 'hello through a descriptor')
const handle = await fs.promises.open(file, 'r')
const { child, channel } = spawn(process.execPath, [path.join(here, 'child.cjs')], { stdio: 'inherit' })
const exited = new Promise((resolve) => child.on('exit', resolve))
channel.send('read this', { fds: [handle] }) // a FileHandle passes too
await handle.close()
for await (const m of channel) {
  assert.equal(m.data.toString(), 'child read: hello through a descriptor')
  assert.equal(m.fds.length, 1)
  closeFds(m.fds)
  break
}
channel.close()
assert.equal(await exited, 0)
console.log('ESM: ok')
