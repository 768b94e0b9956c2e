// The utility process of the Electron smoke test: receives its channel end over the
// bootstrap socket, then answers the main process with the contents of the file whose
// descriptor arrives over the channel.
'use strict'
const fs = require('node:fs')
const net = require('node:net')
const { Channel, closeFds, recvmsg } = require('../..')

const sock = new net.Socket()
// Paused before it connects, so that Node never reads from it: the descriptor we wait
// for must be received by recvmsg, not swallowed by a plain read.
sock.pause()
sock.connect(process.argv[2], function waitForChannel() {
  let m
  try {
    m = recvmsg(sock._handle.fd)
  } catch (err) {
    if (err.code === 'EAGAIN') return setTimeout(waitForChannel, 10)
    throw err
  }
  if (!m || m.fds.length !== 1) throw new Error(`expected one descriptor, got ${JSON.stringify(m)}`)
  sock.destroy()
  const channel = Channel.fromFd(m.fds[0])
  channel.on('message', (msg) => {
    const text = fs.readFileSync(msg.fds[0], 'utf8')
    closeFds(msg.fds)
    channel.send(`utility process ${process.pid} read: ${text}`)
    channel.end()
  })
  channel.on('end', () => {
    channel.close()
    process.exit(0)
  })
})
