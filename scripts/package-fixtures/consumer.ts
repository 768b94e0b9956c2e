// A TypeScript consumer, type-checked against the shipped .d.ts (strict, node16).
import { Channel, spawn, socketpair, sendmsg, recvmsg, closeFds, type Message, type SocketpairError } from 'socketpair'

const [a, b] = socketpair('stream', { cloexec: true })
const sent: number = sendmsg(a, 'hi', [])
const got = recvmsg(b, { maxBytes: 16 })
if (got) {
  const data: Buffer = got.data
  const fds: number[] = got.fds
  closeFds(fds)
  void data
}
closeFds([a, b])
void sent

const [x, y] = Channel.pair({ type: 'stream' })
y.on('message', (m: Message) => {
  const text: string = m.data.toString()
  const fds: number[] = m.fds
  void text
  void fds
})
y.on('error', (e: SocketpairError) => console.error(e.code))
const ok: boolean = x.send('ping', { fds: [] })
void ok

const { child, channel } = spawn(process.execPath, ['-e', '0'], { stdio: 'inherit' })
child.on('exit', () => channel.close())
