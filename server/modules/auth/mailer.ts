import nodemailer, { type Transporter } from 'nodemailer';
import type { Logger } from '../../internal/log.js';

export interface Mail {
  to: string;
  subject: string;
  text: string;
}

/**
 * Sends through SMTP_URL, or writes mails to the log when it is unset (development).
 * Sending happens in the background: a request that mails answers as fast as one that
 * does not, so response times do not tell whether an address has an account.
 */
export class Mailer {
  private readonly transport: Transporter | null;
  private readonly pending = new Set<Promise<void>>();

  constructor(private readonly options: { smtpUrl: string | null; from: string; log: Logger }) {
    this.transport = options.smtpUrl ? nodemailer.createTransport(options.smtpUrl) : null;
  }

  send(mail: Mail): void {
    const task = this.deliver(mail).finally(() => this.pending.delete(task));
    this.pending.add(task);
  }

  private async deliver(mail: Mail): Promise<void> {
    if (!this.transport) {
      this.options.log.info({ mail: { to: mail.to, subject: mail.subject, text: mail.text } }, 'mail (SMTP_URL unset)');
      return;
    }
    try {
      await this.transport.sendMail({ from: this.options.from, to: mail.to, subject: mail.subject, text: mail.text });
    } catch (error) {
      this.options.log.error({ err: error, to: mail.to, subject: mail.subject }, 'could not send mail');
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.pending]);
    this.transport?.close();
  }
}
