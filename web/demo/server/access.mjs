// Who the demo's users are and what each may see.

/** The demo users, in the order the UI lists them. */
export const USERS = Object.freeze(['alice', 'bob', 'carol']);

const SEE_RESTRICTED = new Set(['alice', 'bob']);

export const isUser = (name) => typeof name === 'string' && USERS.includes(name);

/** Whether `user` may see restricted applications (alice and bob; never carol). */
export const canSeeRestricted = (user) => SEE_RESTRICTED.has(user);

/** Whether `user` may see `entity`. */
export const canSee = (user, entity) => !entity.restricted || canSeeRestricted(user);

/** The prefix of the channels that need a subscription token: the restricted audience. */
export const RESTRICTED_CHANNEL_PREFIX = '$entities:';

/**
 * The private presence channel of an application's edit form, `$editing:applications.<id>`:
 * its token goes to whoever may see that application, so its presence (who edits) is
 * as private as the application.
 */
export const EDITING_CHANNEL = /^\$editing:applications\.([A-Za-z0-9_-]{1,128})$/;
