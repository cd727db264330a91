import { invalidArgument } from '../../core/errors.ts'

/** The URL schemes of the MySQL-family drivers, for `databaseUrl(..., MYSQL_URL)`. */
export const MYSQL_URL = /^(mysql|mariadb):\/\//

/**
 * `DATABASE_URL`, the connection every session opener falls back to when none is given. One
 * reader so that every adapter refuses a missing (or, with `scheme`, foreign) URL the same way;
 * `how` ends the message with what that data layer's user passes instead.
 */
export function databaseUrl(how = '', scheme?: { pattern: RegExp; mismatch: string }): string {
  const url = process.env.DATABASE_URL
  if (!url) throw invalidArgument(`no database connection given and DATABASE_URL is not set${how}`)
  if (scheme !== undefined && !scheme.pattern.test(url)) {
    throw invalidArgument(`no database connection given and DATABASE_URL ${scheme.mismatch}`)
  }
  return url
}

/** Whether `DATABASE_URL` is set, for openers that check before they resolve a target. */
export function hasDatabaseUrl(): boolean {
  return Boolean(process.env.DATABASE_URL)
}

/** `DATABASE_URL` or undefined, for log lines that name the endpoint without requiring one. */
export function databaseUrlIfSet(): string | undefined {
  return process.env.DATABASE_URL || undefined
}
