import nodemailer from 'nodemailer';
import { onAuth } from 'basalt/functions';

/**
 * Sends a welcome mail to every new user with an email address. The function declares
 * the variables it reads: it sees SMTP_URL and MAIL_FROM and nothing else of the
 * server's environment. Without SMTP_URL it only logs what it would send.
 */
export default onAuth({ on: 'user.created', env: ['SMTP_URL', 'MAIL_FROM'], retries: 5 }, async (event, ctx) => {
  const email = typeof event.user?.email === 'string' ? event.user.email : null;
  if (!email) return; // anonymous users have no address
  const mail = {
    from: ctx.env.MAIL_FROM ?? 'Basalt <no-reply@localhost>',
    to: email,
    subject: 'Welcome!',
    text: `Hello ${email}, thanks for signing up.`,
    // The event id is stable across retries: a mail server that dedupes on Message-ID
    // keeps a retried delivery from reaching the user twice.
    messageId: `<${event.id}@basalt.welcome>`,
  };
  if (!ctx.env.SMTP_URL) {
    ctx.log.info('would send a welcome mail (SMTP_URL is not set)', { to: email });
    return;
  }
  await nodemailer.createTransport(ctx.env.SMTP_URL).sendMail(mail);
  ctx.log.info('welcome mail sent', { to: email });
});
