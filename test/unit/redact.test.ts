import { describe, expect, it } from 'vitest';
import { redactUrl } from '../../src/redact.js';

describe('redactUrl', () => {
  it('hides the password and keeps everything else', () => {
    expect(redactUrl('redis://user:s3cret@host:6379/0')).toBe('redis://user:***@host:6379/0');
    expect(redactUrl('postgres://postgres:pw@db:5432/app?sslmode=require')).toBe(
      'postgres://postgres:***@db:5432/app?sslmode=require',
    );
    expect(redactUrl('redis://:only-password@host:6379')).toBe('redis://:***@host:6379');
  });

  it('returns a URL without a password unchanged, and hides user:password@ in what is not a URL', () => {
    expect(redactUrl('redis://127.0.0.1:6379')).toBe('redis://127.0.0.1:6379');
    expect(redactUrl('not-a-url')).toBe('not-a-url');
    expect(redactUrl('//u:p@[bad')).toBe('//u:***@[bad');
  });
});
