// bmrt's version: servers announce it in their records and their /bmrt/info answers; the gateway
// reports it in its swarm state and in the OpenAI API's system_fingerprint.

export const VERSION = '0.1.0'
