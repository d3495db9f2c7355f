import { http } from 'basalt/functions';

export default http(async () => ({ hello: 'world' }));
