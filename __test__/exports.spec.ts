/**
 * The public surface: what `require('socketpair')` returns at run time, and every name
 * (values and types) that index.ts exports. Changing either is a deliberate act: update
 * the lists here, and CHANGELOG.
 */
import test from 'ava'
import path from 'node:path'
import ts from 'typescript'

import * as socketpair from '..'

const RUNTIME = [
  'BINARY_ENV',
  'CHANNEL_FD_ENV',
  'Channel',
  'DEFAULT_MAX_MESSAGE_BYTES',
  'MAX_FDS_PER_MESSAGE',
  'closeFds',
  'loadError',
  'peerCredentials',
  'platformPackage',
  'recvmsg',
  'sendmsg',
  'socketpair',
  'spawn',
]

const TYPES = [
  'ChannelOptions',
  'Credentials',
  'IteratorOptions',
  'Message',
  'PairOptions',
  'Passable',
  'ReceivedMessage',
  'RecvmsgOptions',
  'SendCallback',
  'SendOptions',
  'SocketType',
  'SocketpairError',
  'SocketpairErrorCode',
  'SocketpairOptions',
  'SpawnOptions',
]

test('the module exports exactly the public run-time names', (t) => {
  t.deepEqual(Object.keys(socketpair).filter((k) => k !== 'default').sort(), RUNTIME)
})

test('index.ts exports exactly the public names, values and types', (t) => {
  const root = path.join(__dirname, '..')
  const file = path.join(root, 'index.ts')
  const program = ts.createProgram([file], {
    strict: true,
    module: ts.ModuleKind.CommonJS,
    target: ts.ScriptTarget.ES2022,
    esModuleInterop: true,
    skipLibCheck: true,
    types: ['node'],
  })
  const checker = program.getTypeChecker()
  const source = program.getSourceFile(file)
  const module = source && checker.getSymbolAtLocation(source)
  t.truthy(module, 'index.ts is a module')
  const names = checker.getExportsOfModule(module!).map((s) => s.name).sort()
  t.deepEqual(names, [...RUNTIME, ...TYPES].sort())
})
