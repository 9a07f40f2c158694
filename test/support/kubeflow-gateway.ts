import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * The Kubeflow gateway's upstream in the quick-start tests: /dex/ to Dex (the in-cluster address, as Kubeflow's
 * VirtualService routes it), everything else to the app (`app()`, read per request because the app starts later).
 */
export async function startKubeflowRouter(dexOrigin: string, app: () => string): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    const path = req.url ?? '/';
    const target = new URL(path, path === '/dex' || path.startsWith('/dex/') ? dexOrigin : app());
    const upstream = request(target, { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}
