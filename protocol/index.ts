export * from './topics.js';
export * from './errors.js';
export * from './messages.js';
export * from './message-types.js';
export * from './views.js';
