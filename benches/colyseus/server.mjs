// Colyseus 0.18, the shape of Playtree's edge benchmark: rooms of 50, a chat line
// broadcast to every member (the sender included).
import { Server, Room } from "@colyseus/core";
import { WebSocketTransport } from "@colyseus/ws-transport";

class ChatRoom extends Room {
  maxClients = 50;
  onCreate() {
    this.onMessage("chat", (client, text) => {
      this.broadcast("chat", { player: client.sessionId, text });
    });
  }
}

const port = Number(process.env.PORT ?? 2567);
const server = new Server({ transport: new WebSocketTransport() });
server.define("chat", ChatRoom);
await server.listen(port, "127.0.0.1");
console.log(`listening ws=127.0.0.1:${port}`);
