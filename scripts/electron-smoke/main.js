// Electron smoke test (run by .github/workflows/ci.yml; Electron cannot be downloaded on
// the project's own machines). The main process loads socketpair, starts a utility
// process, hands it one end of a Channel over a bootstrap Unix socket (SCM_RIGHTS: a
// utility process cannot inherit descriptors), then passes it an open file over that
// channel. The utility process reads the file through the descriptor and answers.
// Exit code 0 when every step checked out.
'use strict'
const { app, utilityProcess } = require('electron')
const assert = require('node:assert')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { Channel, sendmsg, loadError } = require('../..')

const CONTENT = `written by the main process ${process.pid}`

function fail(err) {
  console.error('electron smoke test FAILED:', err)
  app.exit(1)
}
setTimeout(() => fail(new Error('timed out after 60 s')), 60_000).unref()

async function main() {
  assert.equal(loadError(), undefined, 'the addon loads in the main process')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'socketpair-electron-'))
  const file = path.join(dir, 'note.txt')
  fs.writeFileSync(file, CONTENT)

  // Bootstrap: a listening Unix socket the utility process connects to.
  const bootstrap = path.join(dir, 'bootstrap.sock')
  const server = net.createServer()
  await new Promise((resolve) => server.listen(bootstrap, resolve))
  // On macOS a utility process starts from the "Electron Helper" executable, whose library
  // validation may refuse a .node signed by another team (ours is only linker-signed, ad
  // hoc). allowLoadingUnsignedLibraries starts it from "Electron Helper (Plugin)" instead,
  // the helper meant for this (an app signs it with the disable-library-validation
  // entitlement). Apps that load socketpair in a utility process need the same on macOS.
  const child = utilityProcess.fork(path.join(__dirname, 'utility.js'), [bootstrap], {
    stdio: 'inherit',
    allowLoadingUnsignedLibraries: process.platform === 'darwin',
  })
  const exited = new Promise((resolve) => child.once('exit', resolve))
  const [conn] = await Promise.all([new Promise((resolve) => server.once('connection', resolve))])

  // Hand over the utility process's end of a fresh channel, then close our copy of it.
  const [mine, theirs] = Channel.pair()
  sendmsg(conn._handle.fd, 'your channel', [theirs.fd])
  theirs.close()

  // Over the channel: an open file's descriptor.
  const fd = fs.openSync(file, 'r')
  mine.send('read this file', { fds: [fd] })
  fs.closeSync(fd)
  const [reply] = await new Promise((resolve) => mine.once('message', (m) => resolve([m])))
  assert.equal(reply.data.toString(), `utility process ${child.pid} read: ${CONTENT}`)
  mine.close()
  conn.destroy()
  server.close()
  assert.equal(await exited, 0, 'the utility process exits cleanly')
  fs.rmSync(dir, { recursive: true })
  console.log(`electron smoke test ok (Electron ${process.versions.electron}, Node ${process.versions.node})`)
  app.exit(0)
}

app.whenReady().then(main, fail).catch(fail)
