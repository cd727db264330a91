import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { internalError } from '../core/errors.ts'

export interface Asset {
  contentType: string
  body: Buffer
}

/**
 * The page's files. The page ships as source (`src/dashboard/page/`, in the package's `files`)
 * and is found from this module's own URL: `../../src/dashboard/page/` is the same folder from
 * `src/dashboard/` (tests, `node --experimental-strip-types`) and from `dist/dashboard/`.
 * The chart library is served from its installed `dist` file: no CDN, the dashboard must work
 * on a machine without internet access.
 */
const PAGE = new URL('../../src/dashboard/page/', import.meta.url)
const require = createRequire(import.meta.url)

const SOURCES: Record<string, { contentType: string; path: () => string }> = {
  '/': { contentType: 'text/html; charset=utf-8', path: () => fileURLToPath(new URL('index.html', PAGE)) },
  '/dashboard.js': {
    contentType: 'text/javascript; charset=utf-8',
    path: () => fileURLToPath(new URL('dashboard.js', PAGE)),
  },
  '/dashboard.css': {
    contentType: 'text/css; charset=utf-8',
    path: () => fileURLToPath(new URL('dashboard.css', PAGE)),
  },
  '/uplot.js': {
    contentType: 'text/javascript; charset=utf-8',
    path: () => require.resolve('uplot/dist/uPlot.iife.min.js'),
  },
  '/uplot.css': {
    contentType: 'text/css; charset=utf-8',
    path: () => require.resolve('uplot/dist/uPlot.min.css'),
  },
}

// Read once per process and kept: a few tens of KB, and a page reload must not touch the disk.
const loaded = new Map<string, Promise<Asset>>()

export function isAsset(path: string): boolean {
  return Object.hasOwn(SOURCES, path)
}

export function loadAsset(path: string): Promise<Asset> {
  const source = SOURCES[path]
  if (source === undefined) return Promise.reject(internalError(`no dashboard asset ${path}`))
  let asset = loaded.get(path)
  if (asset === undefined) {
    asset = readFile(source.path()).then((body) => ({ contentType: source.contentType, body }))
    // A failed read (a broken install) is not cached, so fixing the files needs no restart.
    asset.catch(() => loaded.delete(path))
    loaded.set(path, asset)
  }
  return asset
}
