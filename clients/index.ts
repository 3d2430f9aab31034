export { ChorusClient, type ChorusClientOptions, type OutgoingMessage } from './chorus-client.js';
export {
  ChorusApi,
  ChorusApiError,
  type GroupInfo,
  type GroupSettings,
  type MemberInfo,
  type PushMode,
  type Receipts,
  type SendReceipt,
} from './chorus-api.js';
export { applyEvent } from './message-state.js';
export { GroupStream, type FetchAfter } from './group-stream.js';
export { LocalStoragePositionStore, MemoryPositionStore, type PositionStore } from './position-store.js';
export * from '../protocol/index.js';
