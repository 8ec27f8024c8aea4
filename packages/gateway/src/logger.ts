/** pino JSON logs; tokens, cookies and payloads never reach them. */
import { type Logger, pino } from 'pino';

export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: 'sse-gateway' },
    redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'token', 'data'], censor: '[redacted]' },
  });
}
