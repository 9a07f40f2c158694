// The HTTP/1.1 ceiling: a node:http server that answers every request 200 with an empty body and does nothing else,
// so the HTTP authorization scenarios (ours and oauth2-proxy's /oauth2/auth) are compared with what Node's HTTP
// stack alone costs under the same h2load --h1 load.
import { createServer } from 'node:http';

const server = createServer((_req, res) => {
  res.writeHead(200, { 'content-length': '0' });
  res.end();
});
// Envoy and nginx keep their connections to the auth service open; so does h2load.
server.keepAliveTimeout = 60_000;
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ msg: 'listening', httpPort: server.address().port }) + '\n');
});
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
