/* global Parse */
// Parse Cloud Code with the same two functions as Basalt's fixture: a no-op afterSave
// trigger that notes when it ran, and a hello cloud function.
const started = [];

Parse.Cloud.afterSave('BenchFn', (request) => {
  started.push([request.object.id, Date.now(), request.object.createdAt.getTime()]);
});

Parse.Cloud.define('hello', () => ({ hello: 'world' }));

Parse.Cloud.define('benchStarted', () => started);
Parse.Cloud.define('benchReset', () => {
  started.length = 0;
  return true;
});
