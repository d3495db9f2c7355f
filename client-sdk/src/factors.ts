import { BasaltError } from './errors.js';
import type { HttpTransport } from './transport.js';
import type {
  AuthResponse,
  MfaFactor,
  MfaVerifyResponse,
  Passkey,
  PasskeyRegisterResponse,
  TotpEnrollment,
} from './wire.js';

/** Takes a session the server issued in place of the current one (a step-up). */
type Adopt = (result: AuthResponse) => Promise<void>;

/**
 * `basalt.auth.mfa`: TOTP factors and recovery codes. A verify or a challenge answers with
 * an `aal2` session, which replaces the current one.
 */
export class MfaClient {
  constructor(
    private readonly http: HttpTransport,
    private readonly adopt: Adopt,
  ) {}

  /** Starts enrolling a TOTP factor: show `qr_code` (or `secret`) to the user's authenticator app. */
  enrollTotp(input: { friendlyName?: string } = {}): Promise<TotpEnrollment> {
    return this.http.request('POST', '/v1/auth/mfa/totp/enroll', { friendly_name: input.friendlyName });
  }

  /** Activates the factor with a code from the app; resolves to the recovery codes, to show once. */
  async verify(input: { factorId: string; code: string }): Promise<MfaVerifyResponse> {
    const result = await this.http.request<MfaVerifyResponse>('POST', '/v1/auth/mfa/totp/verify', {
      factor_id: input.factorId,
      code: input.code,
    });
    await this.adopt(result);
    return result;
  }

  /** Proves the second factor after a sign-in that said `mfa_required`: the session becomes `aal2`. */
  async challenge(input: { factorId: string; code: string } | { recoveryCode: string }): Promise<AuthResponse> {
    const body =
      'recoveryCode' in input ? { recovery_code: input.recoveryCode } : { factor_id: input.factorId, code: input.code };
    const result = await this.http.request<AuthResponse>('POST', '/v1/auth/mfa/challenge', body);
    await this.adopt(result);
    return result;
  }

  factors(): Promise<{ factors: MfaFactor[]; recovery_codes_left: number }> {
    return this.http.request('GET', '/v1/auth/mfa/factors');
  }

  /** Removes a factor; needs an `aal2` session (else MFA_REQUIRED). The user's other sessions end. */
  async remove(factorId: string): Promise<void> {
    await this.http.request('DELETE', `/v1/auth/mfa/factors/${encodeURIComponent(factorId)}`);
  }
}

// ---- WebAuthn: JSON options to the browser's ArrayBuffers and back ----------------------

function bytes(base64url: string): Uint8Array<ArrayBuffer> {
  const base64 = base64url.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((base64url.length + 3) % 4);
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

function base64url(buffer: ArrayBuffer | null | undefined): string | undefined {
  if (!buffer) return undefined;
  let text = '';
  for (const byte of new Uint8Array(buffer)) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

type Descriptor = { id: string; type: 'public-key'; transports?: AuthenticatorTransport[] };
type OptionsJSON = Record<string, unknown> & {
  challenge: string;
  user?: { id: string; name: string; displayName: string };
  excludeCredentials?: Descriptor[];
  allowCredentials?: Descriptor[];
};

function descriptors(list: Descriptor[] | undefined): PublicKeyCredentialDescriptor[] | undefined {
  return list?.map((item) => ({ ...item, id: bytes(item.id) }));
}

function credentials(): CredentialsContainer {
  const container = (globalThis as { navigator?: { credentials?: CredentialsContainer } }).navigator?.credentials;
  if (!container || typeof PublicKeyCredential === 'undefined') {
    throw new BasaltError('INVALID_REQUEST', 'Passkeys need a browser with WebAuthn.');
  }
  return container;
}

/** The credential as the server reads it (RegistrationResponseJSON / AuthenticationResponseJSON). */
function credentialJson(credential: Credential | null): Record<string, unknown> {
  if (!(credential instanceof PublicKeyCredential)) {
    throw new BasaltError('INVALID_REQUEST', 'The browser returned no passkey.');
  }
  const response = credential.response as AuthenticatorAttestationResponse & AuthenticatorAssertionResponse;
  return {
    id: credential.id,
    rawId: base64url(credential.rawId),
    type: 'public-key',
    authenticatorAttachment: credential.authenticatorAttachment ?? undefined,
    clientExtensionResults: credential.getClientExtensionResults(),
    response: {
      clientDataJSON: base64url(response.clientDataJSON),
      attestationObject: base64url(response.attestationObject),
      transports: response.getTransports?.(),
      authenticatorData: base64url(response.authenticatorData),
      signature: base64url(response.signature),
      userHandle: base64url(response.userHandle),
    },
  };
}

/** `basalt.auth.passkeys`: the signed-in user's passkeys. */
export class PasskeysClient {
  constructor(
    private readonly http: HttpTransport,
    private readonly adopt: Adopt,
  ) {}

  /**
   * Creates a passkey with the browser's authenticator and stores it. The session becomes
   * `aal2` and the user's other sessions end (a new factor).
   */
  async register(input: { name?: string } = {}): Promise<PasskeyRegisterResponse> {
    const options = await this.http.request<OptionsJSON>('POST', '/v1/auth/passkeys/register/options');
    const publicKey = {
      ...options,
      challenge: bytes(options.challenge),
      user: { ...options.user!, id: bytes(options.user!.id) },
      excludeCredentials: descriptors(options.excludeCredentials),
      // The rest (rp, pubKeyCredParams, authenticatorSelection ...) is the same in JSON.
    } as unknown as PublicKeyCredentialCreationOptions;
    const credential = credentialJson(await credentials().create({ publicKey }));
    const result = await this.http.request<PasskeyRegisterResponse>('POST', '/v1/auth/passkeys/register/verify', {
      credential,
      name: input.name,
    });
    await this.adopt(result);
    return result;
  }

  async list(): Promise<Passkey[]> {
    return (await this.http.request<{ passkeys: Passkey[] }>('GET', '/v1/auth/passkeys')).passkeys;
  }

  /** Removes a passkey; needs an `aal2` session. The user's other sessions end. */
  async remove(id: string): Promise<void> {
    await this.http.request('DELETE', `/v1/auth/passkeys/${encodeURIComponent(id)}`);
  }

  /** Signs in with a passkey (any discoverable one, or one of `email`'s account): an `aal2` session. */
  async signIn(input: { email?: string } = {}): Promise<AuthResponse> {
    const options = await this.http.request<OptionsJSON>(
      'POST',
      '/v1/auth/passkeys/signin/options',
      { email: input.email },
      {},
      { anonymous: true },
    );
    const publicKey = {
      ...options,
      challenge: bytes(options.challenge),
      allowCredentials: descriptors(options.allowCredentials),
    } as PublicKeyCredentialRequestOptions;
    const credential = credentialJson(await credentials().get({ publicKey }));
    const result = await this.http.request<AuthResponse>(
      'POST',
      '/v1/auth/passkeys/signin/verify',
      { credential },
      {},
      { anonymous: true },
    );
    await this.adopt(result);
    return result;
  }
}
