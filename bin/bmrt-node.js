#!/usr/bin/env node
import { launch } from './launch.js'
launch('bmrt-node', '../dist/src/cli/bmrt-node.js')
