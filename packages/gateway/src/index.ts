/** sse-gateway as a library: start a node in-process, or reuse its pieces. */
export { type Config, ConfigError, configWith, helpText, loadConfig } from './config.js';
export { type ClaimStore, MemoryClaimStore } from './engine/claim-store.js';
export type { Engine, HistoryPage, Publication, PublishRequest, Retention } from './engine/engine.js';
export { createStorage, type Storage } from './engine/index.js';
export { MemoryEngine } from './engine/memory-engine.js';
export { type Gateway, type GatewayOptions, startGateway } from './gateway.js';
export { encodeBody, encodeFrame, encodeRetry } from './sse/frame.js';
export { RESET_EVENT, type ResetReason } from './sse/reserved-events.js';
