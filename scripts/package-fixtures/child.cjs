// The child of the round trip: picks up its channel, reads the file whose descriptor
// arrives, answers with what it read, and sends a descriptor of its own back.
'use strict'
const fs = require('node:fs')
const { Channel, closeFds } = require('socketpair')

const channel = Channel.fromParent()
channel.on('message', (m) => {
  const text = fs.readFileSync(m.fds[0], 'utf8')
  closeFds(m.fds)
  const own = fs.openSync(__filename, 'r')
  channel.send(`child read: ${text}`, { fds: [own] })
  fs.closeSync(own)
  channel.end()
})
channel.on('end', () => channel.close())
