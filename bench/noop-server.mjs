// The ceiling: a grpc-js Check server on the same proto that allows everything and does nothing else.
// It uses proto-loader's standard object conversion, as a typical grpc-js service would.
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';

const protoDir = fileURLToPath(new URL('../proto/', import.meta.url));
const def = loadSync('envoy/service/auth/v3/external_auth.proto', {
  includeDirs: [protoDir],
  keepCase: true,
  longs: String,
  enums: Number,
  defaults: false,
  oneofs: true,
});
const pkg = grpc.loadPackageDefinition(def);
const server = new grpc.Server({ 'grpc.max_concurrent_streams': 1000 });
const OK = { status: { code: 0 }, ok_response: {} };
server.addService(pkg.envoy.service.auth.v3.Authorization.service, {
  Check: (_call, cb) => cb(null, OK),
});
const port = Number(process.argv[2] ?? 0);
server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => {
  if (err) throw err;
  process.stdout.write(JSON.stringify({ msg: 'listening', grpcPort: bound }) + '\n');
});
process.on('SIGTERM', () => server.forceShutdown() || process.exit(0));
