// Starts the Telegram Bot API emulator (telegram-test-api, from npm) on 127.0.0.1 and the
// port given, then prints "ready <port>". Clade's test drives it over its HTTP API.
const TelegramServer = require('telegram-test-api');

const port = Number(process.argv[2] || 0);
const server = new TelegramServer({ port, host: '127.0.0.1', storeTimeout: 600 });
server.start().then(() => {
  process.stdout.write(`ready ${port}\n`);
}).catch((err) => {
  process.stderr.write(`emulator failed: ${err}\n`);
  process.exit(1);
});
process.on('SIGTERM', () => server.stop().then(() => process.exit(0)));
