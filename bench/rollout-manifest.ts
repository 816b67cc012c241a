/** The CloneSet the rollout benchmark applies: N replicas of the app, an exec readiness probe, one update strategy. */
import { stringify } from 'yaml';
import type { UpdateStrategyType } from '../src/controller/types';
import { APP_COMMAND, READINESS_COMMAND } from './rollout-app-image';

export interface AppSetOptions {
  name: string;
  replicas: number;
  image: string;
  type: UpdateStrategyType;
  /** Int or percentage, as in the CloneSet spec. */
  maxUnavailable: number | string;
}

export function appCloneSetYaml(o: AppSetOptions): string {
  const labels = { app: o.name };
  return stringify({
    apiVersion: 'apps.kruise.io/v1alpha1',
    kind: 'CloneSet',
    metadata: { name: o.name },
    spec: {
      replicas: o.replicas,
      selector: { matchLabels: labels },
      template: {
        metadata: { labels },
        spec: {
          containers: [
            {
              name: 'app',
              image: o.image,
              command: APP_COMMAND,
              // The smallest period Kubernetes allows; a kubelet would probe the same way.
              readinessProbe: { exec: { command: READINESS_COMMAND }, periodSeconds: 1 },
            },
          ],
        },
      },
      updateStrategy: {
        type: o.type,
        maxUnavailable: o.maxUnavailable,
        inPlaceUpdateStrategy: { gracePeriodSeconds: 0 },
      },
    },
  });
}
